"""Sampling completions from a policy, and filling the labelling queue with them.

``generate_completions`` batches prompts with left padding and attention masks and samples with
a KV cache (``model.generate``), stopping each sequence at ``<|endoftext|>``. Every completion
carries the sampling parameters that produced it (``gen_params``), and ``fill_queue`` writes
them to the database with the model version of the policy, so a label always says which policy
wrote the text it judged.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from base_policy.sampling import Bf16Weights, sample_tokens
from common.errors import ConfigError, UserError
from common.precision import use_bf16

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """The ``generate`` section: how completions for the labelling queue are sampled."""

    policy: str | None = field(
        default=None,
        metadata={
            "help": "folder or hub name of the policy; null/base = $RLHF_ARTIFACTS/base_policy, latest = newest PPO policy"
        },
    )
    n: int = field(default=64, metadata={"help": "completions to write"})
    completions_per_prompt: int = field(
        default=1, metadata={"help": "samples per prompt (several let labellers compare)"}
    )
    prompts_per_batch: int = field(default=16, metadata={"help": "prompts per generate() call"})
    max_new_tokens: int = field(
        default=48, metadata={"help": "longest completion, in tokens (stops earlier at end of text)"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (0 = greedy)"})
    top_k: int = field(default=0, metadata={"help": "sample from the k likeliest tokens (0 = all; PPO samples with 0)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (1.0 = off)"})
    prompt_source: Literal["imdb", "file"] = field(
        default="imdb", metadata={"help": "imdb = openings of IMDB train reviews; file = prompt_file"}
    )
    prompt_file: str | None = field(
        default=None, metadata={"help": "one prompt per line (used when prompt_source=file or --prompt-file is given)"}
    )
    seed: int | None = field(
        default=None,
        metadata={"help": "seed of prompt choice and sampling (null = fresh each run, so refills bring new prompts)"},
    )
    bf16: bool = field(
        default=True, metadata={"help": "bf16 autocast while sampling on CPU (faster matmuls; the weights stay fp32)"}
    )

    def validate(self) -> None:
        for name in ("n", "completions_per_prompt", "prompts_per_batch", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"generate.{name}={getattr(self, name)} must be >= 1.", f"set generate.{name} to a positive number."
                )
        if self.temperature < 0:
            raise ConfigError(
                f"generate.temperature={self.temperature} is negative.",
                "use 0 (greedy) or a positive temperature such as 1.0.",
            )
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError(
                f"generate.top_k={self.top_k}, top_p={self.top_p}: need top_k >= 0 and 0 < top_p <= 1.",
                "use top_k: 0, top_p: 1.0 for pure sampling.",
            )
        if self.prompt_source == "file" and not self.prompt_file:
            raise ConfigError(
                "generate.prompt_source=file but generate.prompt_file is not set.",
                "set prompt_file or pass --prompt-file.",
            )

    @property
    def gen_params(self) -> dict[str, Any]:
        """What is recorded with each completion."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "do_sample": self.temperature > 0,
            "seed": self.seed,
        }


def context_length(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)


def encode_prompts(tok, prompts: Sequence[str], max_prompt_tokens: int) -> list[list[int]]:
    """Token ids of each prompt, cut from the left to ``max_prompt_tokens`` (with a warning)
    so the end of the prompt, which the completion continues, is kept."""
    out, cut = [], 0
    for p in prompts:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        if not ids:
            ids = [tok.eos_token_id]  # an empty prompt: start a fresh text
        if len(ids) > max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
            cut += 1
        out.append(ids)
    if cut:
        log.warning(
            "%d prompt(s) longer than %d tokens were truncated from the left to fit the context", cut, max_prompt_tokens
        )
    return out


def left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    return input_ids, mask


@torch.no_grad()
def generate_completions(
    model, tokenizer, prompts: Sequence[str], cfg: GenerateConfig | None = None
) -> list[dict[str, Any]]:
    """Sample ``cfg.completions_per_prompt`` completions for each prompt.

    Returns one dict per completion, in prompt order: ``prompt``, ``text`` (the new text only,
    without the end-of-text token), ``n_tokens``, ``finish_reason`` ('eos' or 'length') and
    ``gen_params``.
    """
    cfg = cfg or GenerateConfig()
    prompts = list(prompts)
    if not prompts:
        raise UserError("the prompt list is empty.", "give at least one prompt (IMDB openings or --prompt-file).")
    ctx = context_length(model)
    if cfg.max_new_tokens >= ctx:
        raise UserError(
            f"max_new_tokens={cfg.max_new_tokens} does not fit the model's context of {ctx} tokens.",
            f"use max_new_tokens < {ctx}.",
        )
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = encode_prompts(tokenizer, prompts, ctx - cfg.max_new_tokens)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    k = cfg.completions_per_prompt
    out: list[dict[str, Any]] = []
    # under autocast the weights are cast to bf16 once for the whole call, not on every token
    weights = Bf16Weights(enabled=_use_bf16(model, cfg.bf16), static=True)
    for start in range(0, len(prompts), cfg.prompts_per_batch):
        chunk = [ids for ids in encoded[start : start + cfg.prompts_per_batch] for _ in range(k)]  # each prompt k times
        input_ids, mask = left_pad(chunk, pad)
        with _autocast(model, cfg.bf16), weights.sampling(model):
            new = _sample_batch(model, input_ids, mask, cfg, eos, pad)  # (B * k, <= max_new_tokens)
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            finish = "length"
            if eos in ids:
                ids = ids[: ids.index(eos)]
                finish = "eos"
            out.append(
                {
                    "prompt": prompts[start + row // k],
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "n_tokens": len(ids),
                    "finish_reason": finish,
                    "gen_params": dict(cfg.gen_params),
                }
            )
    model.train(was_training)
    return out


def _device(model) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _use_bf16(model, bf16: bool) -> bool:
    return _device(model).type == "cpu" and use_bf16(bf16)


def _autocast(model, bf16: bool):
    return torch.autocast(_device(model).type, dtype=torch.bfloat16, enabled=_use_bf16(model, bf16))


def _sample_batch(model, input_ids, mask, cfg: GenerateConfig, eos: int | None, pad: int) -> torch.Tensor:
    """New tokens (B, <= max_new_tokens) for one left-padded batch: pure sampling through the project's
    KV-cache sampler (:func:`base_policy.sampling.sample_tokens`, the one PPO samples with); greedy,
    top-k or top-p through ``model.generate``."""
    if cfg.temperature > 0 and cfg.top_k == 0 and cfg.top_p == 1.0:
        tokens, _ = sample_tokens(
            model, input_ids, mask, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, eos_id=eos,
            stop_at_eos=eos is not None, pad_id=pad,
        )  # fmt: skip
        return tokens
    sample = cfg.temperature > 0
    kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": cfg.max_new_tokens, "pad_token_id": pad,
                              "eos_token_id": eos, "use_cache": True}  # fmt: skip
    if sample:
        kwargs.update(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    return model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)[:, input_ids.shape[1] :]


def default_prompts(n: int, cfg: GenerateConfig, data_cfg=None) -> list[str]:
    """``n`` prompts: the lines of ``cfg.prompt_file``, or openings of IMDB train reviews."""
    from common.imdb import DataConfig, imdb_texts, make_prompts, read_prompt_file

    data_cfg = data_cfg or DataConfig()
    if cfg.prompt_source == "file" or cfg.prompt_file:
        prompts = read_prompt_file(cfg.prompt_file)  # type: ignore[arg-type]
        return prompts[:n] if n < len(prompts) else prompts
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    return make_prompts(imdb_texts(data_cfg)["train"], n, data_cfg, seed=seed)


def refill_prompts(engine, n: int, cfg: GenerateConfig | None = None) -> list[str]:
    """Prompts for ``n`` more completions in the labelling queue (``n / completions_per_prompt``
    of them): fresh IMDB openings (a new random draw each call) or the prompt file."""
    from common.config import load_config
    from common.imdb import DataConfig

    cfg = cfg or load_config(GenerateConfig, "generate")
    del engine  # prompts already in the database are reused by db.add_prompts, never duplicated
    return default_prompts(math.ceil(n / cfg.completions_per_prompt), cfg, load_config(DataConfig, "data"))


# --------------------------------------------------------------------------- the queue

_CACHE_LOCK = threading.Lock()
_MODEL_CACHE: dict[tuple[str, float], tuple[Any, Any]] = {}


def _cached_policy(spec: str):
    """Load a policy once per (path, modification time): the labelling app refills often."""
    from base_policy.loading import load_policy

    p = Path(spec)
    key = (str(p.resolve()) if p.exists() else spec, p.stat().st_mtime if p.exists() else 0.0)
    with _CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()
            _MODEL_CACHE[key] = load_policy(spec)
        return _MODEL_CACHE[key]


def release_cached_policies() -> None:
    """Forget the policy :func:`fill_queue` keeps loaded (the app's refills reuse it): a run that goes
    on to train (the demo) calls this, so the generation model's 0.5 GB is not held through PPO."""
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()


def fill_queue(
    engine,
    policy_path: str | Path | None,
    n: int | None = None,
    cfg: GenerateConfig | None = None,
    *,
    prompts: Sequence[str] | None = None,
) -> int:
    """Write ``n`` new completions (default ``cfg.n``) from the policy at ``policy_path`` (default
    ``cfg.policy``) to the database; returns how many were written. ``cfg`` defaults to the
    ``generate`` section of the profile; prompts default to fresh IMDB openings (or ``cfg.prompt_file``).

    The policy is registered as a model version if the database does not know it yet. Safe to
    call from a background thread.
    """
    import db
    from base_policy.loading import resolve_policy
    from base_policy.registry import ensure_registered
    from common.config import load_config

    if cfg is None:
        cfg = load_config(GenerateConfig, "generate")
    n = cfg.n if n is None else int(n)
    if n < 1:
        return 0
    spec = resolve_policy(policy_path if policy_path is not None else cfg.policy)
    model, tok = _cached_policy(spec)
    version = ensure_registered(engine, spec)
    if prompts is None:
        prompts = refill_prompts(engine, n, cfg)
    rows = generate_completions(model, tok, list(prompts), cfg)[:n]
    for r in rows:
        r["gen_params"]["finish_reason"] = r["finish_reason"]
    ids = db.add_completions(
        engine,
        [
            db.NewCompletion(prompt=r["prompt"], text=r["text"], model_version_id=version, gen_params=r["gen_params"])
            for r in rows
        ],
    )
    log.info("queue: wrote %d completions from policy version %d (%s)", len(ids), version, spec)
    return len(ids)
