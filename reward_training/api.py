"""The course API: ``reward_model(strings)`` and ``load_reward_fn(path)``, plus queue scoring.

Both read a saved reward model folder (``$RLHF_ARTIFACTS/reward_models/<run-id>``; ``None``
means the one ``latest`` names). The model is loaded once per (folder, device) and cached.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from common.errors import UserError
from common.paths import resolve_latest, reward_models_dir

log = logging.getLogger(__name__)

ScoreKind = Literal["prob", "logit", "logit_diff"]
KINDS = ("prob", "logit", "logit_diff")


def resolve_model_dir(path: str | Path | None = None) -> Path:
    """The reward model folder: ``path`` itself, the run ``path/latest`` names, or the latest
    run under ``$RLHF_ARTIFACTS/reward_models``."""
    if path is None:
        found = resolve_latest(reward_models_dir())
        if found is None:
            raise UserError(
                f"there is no reward model under {str(reward_models_dir())!r} yet.",
                "train one with `make reward-model` (python -m reward_training).",
            )
        return found
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    found = resolve_latest(path.parent if path.name == "latest" and path.is_file() else path)  # also .../latest itself
    if found is not None:
        return found
    raise UserError(
        f"{str(path)!r} is not a reward model folder (no config.json, no `latest`).",
        "give a folder written by `python -m reward_training`, or leave the path out for the latest one.",
    )


@functools.lru_cache(maxsize=4)
def _load(folder: str, device: str, mtime: float):
    """(model, tokenizer, settings), cached per folder, device and weights' modification time."""
    from reward_training.model import load_backbone, load_heads, load_members

    config = Path(folder) / "config.json"
    arch = (_read_json(config).get("architectures") or []) if config.is_file() else []
    if not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):  # never a fallback tokenizer
        raise UserError(
            f"the reward model folder {folder!r} has no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}).",
            "copy the tokenizer files of its backbone into it, or train it again (`make reward-model`).",
        )
    if arch and not any(a.endswith("ForSequenceClassification") for a in arch):  # e.g. a policy folder by mistake
        raise UserError(
            f"{folder!r} holds a {arch[0]}, not a reward model (a sequence classifier).",
            "pass a folder written by `python -m reward_training` (make reward-model), or leave the path out for the latest one.",
        )
    try:
        model, tok = load_backbone(folder)
    except UserError as err:  # a damaged reward model: the fix is not about reward.backbone
        raise UserError(
            err.problem.replace("the reward backbone", "the reward model", 1),
            "train it again (`make reward-model`), or pass another reward model folder.",
        ) from None
    load_heads(model, folder)
    for m in [model, *load_members(model, folder)]:
        m.to(torch.device(device)).eval()
        for p in m.parameters():
            p.requires_grad_(False)
    positions = getattr(model.config, "max_position_embeddings", None) or 512  # a 100 kB text must fit the model
    settings = {"max_length": min(tok.model_max_length or 512, 512, positions), "bf16": True}
    f = Path(folder) / "reward_config.json"
    if f.is_file():
        settings.update(_read_json(f))
    return model, tok, settings


#: Files of which a saved tokenizer has at least one.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model")


def _read_json(path: Path) -> dict:
    """A model folder's JSON file as a dict, or one line naming the file and the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{str(path)!r} cannot be read as JSON ({type(err).__name__}: {str(err)[:120]}).",
            "train the reward model again (`make reward-model`), or restore the file from its run.",
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"{str(path)!r} does not hold a JSON object.", "train the reward model again (`make reward-model`)."
        )
    return data


def _weights_mtime(folder: Path) -> float:
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin")) or [folder / "config.json"]
    return max(p.stat().st_mtime for p in files)


def load_reward_fn(
    path: str | Path | None = None,
    *,
    kind: ScoreKind = "prob",
    device: str | torch.device | None = None,
    batch_size: int = 32,
    bf16: bool | None = None,
    conservative_k: float | None = None,
) -> Callable[[list[str]], torch.Tensor]:
    """A function ``texts -> scores`` (float32 tensor of shape (N,), on ``device``) for PPO.

    ``kind``: ``prob`` = P(good) in [0, 1]; ``logit`` = the raw POSITIVE logit (what the course
    took from ``lvwerra/distilbert-imdb``); ``logit_diff`` = POSITIVE - NEGATIVE logit = log-odds of good.
    Batched, no gradient; bf16 autocast as the model was trained unless ``bf16`` says otherwise.

    With an ensemble the score is the ensemble's: ``kind`` of the mean of its members' (or heads') logits,
    minus ``conservative_k`` x the standard deviation of ``kind`` across them (``conservative_k``: None =
    the model's saved ``reward.conservative_k``, 0 unless set). A single model has no spread: its own score.
    """
    from reward_training.model import ensemble_size, predict_logits, sync_mean_head

    if kind not in KINDS:
        raise UserError(f"unknown reward kind {kind!r}.", f"use one of {', '.join(KINDS)}.")
    folder = resolve_model_dir(path).resolve()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model, tok, settings = _load(str(folder), str(dev), _weights_mtime(folder))
    use_bf16 = settings.get("bf16", True) if bf16 is None else bf16
    k = float(settings.get("conservative_k", 0.0) if conservative_k is None else conservative_k)
    if not (k >= 0 and k < float("inf")):
        raise UserError(f"conservative_k={conservative_k!r} must be a finite number >= 0.", "use e.g. 0 or 1.")
    members = k > 0 and ensemble_size(model) > 1
    sync_mean_head(model)

    def reward_fn(texts: list[str]) -> torch.Tensor:
        texts = [str(t) for t in texts]
        logits = predict_logits(
            model,
            tok,
            texts,
            max_length=settings["max_length"],
            batch_size=batch_size,
            bf16=use_bf16,
            device=dev,
            members=members,
        )  # (N, 2), or (K, N, 2) per head, float32 on CPU
        scores = kind_scores(logits, kind)
        if members:
            mean = kind_scores(logits.mean(0), kind)  # the mean head's score
            scores = mean - k * scores.std(0, unbiased=False)
        return scores.to(dev)

    reward_fn.model_dir = folder  # type: ignore[attr-defined]
    reward_fn.kind = kind  # type: ignore[attr-defined]
    reward_fn.conservative_k = k  # type: ignore[attr-defined]
    return reward_fn


def kind_scores(logits: torch.Tensor, kind: ScoreKind) -> torch.Tensor:
    """The score of ``kind`` from logits (..., 2): P(good), the POSITIVE logit, or the log-odds of good."""
    if kind == "prob":
        return torch.softmax(logits, dim=-1)[..., 1]
    if kind == "logit":
        return logits[..., 1]
    return logits[..., 1] - logits[..., 0]


def reward_model(strings: list[str], path: str | Path | None = None) -> dict[str, float]:
    """The course's ``reward_model``: each string mapped to its probability of being good."""
    strings = list(strings)
    probs = load_reward_fn(path, kind="prob")(strings)
    return {s: float(p) for s, p in zip(strings, probs.tolist())}


def score_completions(engine, path: str | Path | None = None, *, limit: int = 5000, batch_size: int = 64) -> int:
    """Write P(good) (the ensemble mean) and, for an ensemble, its spread (std of P(good) across the heads)
    for unlabelled completions into the database (the app's "uncertain first" order); returns how many
    were scored. The model must be registered in the database."""
    import db

    folder = resolve_model_dir(path).resolve()
    version = next((v for v in db.list_model_versions(engine, kind="reward") if Path(v.path).resolve() == folder), None)
    if version is None:
        raise UserError(
            f"the reward model {str(folder)!r} is not registered in the database.",
            "score with a model trained by `python -m reward_training` against this RLHF_DB_URL.",
        )
    items = db.unlabelled_completions(engine, limit)
    if not items:
        return 0
    from reward_training.model import predict_mean_spread

    model, tok, settings = _load(str(folder), "cpu", _weights_mtime(folder))
    probs, spread = predict_mean_spread(
        model,
        tok,
        [db.shown_text(it.prompt, it.completion) for it in items],
        max_length=settings["max_length"],
        batch_size=batch_size,
        bf16=settings.get("bf16", True),
    )
    ids = [it.completion_id for it in items]
    db.set_reward_scores(
        engine,
        dict(zip(ids, probs.tolist())),
        version.id,
        spreads=dict(zip(ids, spread.tolist())) if spread is not None else None,
    )
    return len(items)
