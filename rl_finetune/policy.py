"""Loading a policy (any causal LM, by folder or hub name) and recording it as a model version.

``load_policy`` is what every stage uses to get a policy: the base policy written by
``make base-model``, a PPO output under ``$RLHF_ARTIFACTS/policies/``, or a hub model such as
``gpt2`` for users with internet. The tokenizer comes back ready for batched generation
(left padding, a pad token).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.paths import base_policy_dir, policies_dir, resolve_latest

log = logging.getLogger(__name__)

#: Weight files a saved model may have, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def resolve_policy(spec: str | Path | None) -> str:
    """Turn a policy spec into a folder or hub name: ``None``/``"base"`` -> the base policy folder,
    ``"latest"`` -> the newest PPO policy, anything else is returned as given."""
    if spec is None or str(spec) == "base":
        return str(base_policy_dir())
    if str(spec) == "latest":
        run = resolve_latest(policies_dir())
        if run is None:
            raise UserError(
                f"there is no PPO policy yet (no {str(policies_dir() / 'latest')!r}).",
                "run `make finetune` first, or pass --policy base.",
            )
        return str(run)
    return str(spec)


def _looks_local(spec: str) -> bool:
    """True when ``spec`` can only mean a local folder (a hub name is ``name`` or ``org/name``)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep != "/" and os.sep in spec:
        return True
    first = spec.split("/", 1)[0]
    return "/" in spec and Path(first).is_dir()


def _missing_fix(spec: str) -> str:
    base = base_policy_dir()
    try:
        is_base = Path(spec).resolve() == base.resolve()
    except OSError:
        is_base = False
    if is_base:
        return "run `make base-model` (python -m rl_finetune pretrain) to create it."
    if Path(spec).resolve().parent == policies_dir().resolve():
        return "run `make finetune` (python -m rl_finetune ppo) to create a PPO policy, or pick an existing folder."
    return ("pass a folder written by save_pretrained: `make base-model` creates "
            f"{str(base)!r}, `make finetune` creates {str(policies_dir())!r}/<run>.")


def load_policy(path_or_name: str | Path | None = None, *, device: str = "cpu"):
    """``(model, tokenizer)`` for a causal LM folder or hub name (``None`` = the base policy).

    The model is in eval mode; the tokenizer pads on the left with EOS when it has no pad token.
    Raises :class:`UserError` naming the path and the command that creates it when it is missing
    or does not hold a model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = resolve_policy(path_or_name)
    path = Path(spec).expanduser()
    local = path.exists()
    if local:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(f"policy path {spec!r} is not a saved model folder (no config.json).", _missing_fix(spec))
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise UserError(f"policy folder {spec!r} has a config but no weights ({', '.join(WEIGHT_FILES[:2])}).", _missing_fix(spec))
        import json

        arch = json.loads((path / "config.json").read_text()).get("architectures") or []
        if arch and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch):  # e.g. a reward model by mistake
            raise UserError(f"policy folder {spec!r} holds a {arch[0]}, not a causal language model.", _missing_fix(spec))
        source = str(path)
    elif _looks_local(spec):
        raise UserError(f"policy path {spec!r} does not exist.", _missing_fix(spec))
    else:
        source = spec  # a hub name such as gpt2 or lvwerra/gpt2-imdb
    from safetensors import SafetensorError  # a damaged model.safetensors

    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError, EnvironmentError, SafetensorError) as err:
        where = "folder" if local else "hub model"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not load the policy {where} {spec!r} ({first[:200]}).",
            _missing_fix(spec) if where == "folder" else
            "check the name and your internet connection (HF_HUB_OFFLINE=1 blocks the hub), "
            "or use a local folder; `make base-model` creates the offline base policy.",
        ) from None
    prepare_tokenizer_for_generation(tok)
    model.to(device)
    model.eval()
    return model, tok


def prepare_tokenizer_for_generation(tok) -> None:
    """Left padding (generation appends on the right) and a pad token (EOS when missing)."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"


# ---------------------------------------------------------------------------- model versions

def weights_fingerprint(path: str | Path) -> str | None:
    """SHA-256 of a folder's weight file (None for hub names): tells two models saved to the
    same folder apart."""
    path = Path(path)
    for name in WEIGHT_FILES:
        f = path / name
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()
    return None


def _canonical(path_or_name: str | Path) -> str:
    """Absolute path for folders, the name itself for hub models."""
    p = Path(path_or_name).expanduser()
    return str(p.resolve()) if p.exists() else str(path_or_name)


def _engine(engine):
    if engine is not None:
        return engine
    import db

    return db.connect()


def register_policy(path: str | Path, *, name: str | None = None, metrics: dict[str, Any] | None = None,
                    parent_id: int | None = None, engine=None) -> int:
    """A new ``policy`` row in the model versions for ``path`` (with its weights' fingerprint)."""
    import db

    engine = _engine(engine)
    canonical = _canonical(path)
    metrics = dict(metrics or {})
    fp = weights_fingerprint(canonical)
    if fp:
        metrics["weights_sha256"] = fp
    version = db.register_model_version(
        engine, kind="policy", name=name or Path(canonical).name or canonical, path=canonical,
        parent_id=parent_id, metrics=metrics)
    log.info("registered policy version %d for %s", version, canonical)
    return version


def find_policy_version(engine, path: str | Path) -> int | None:
    """The newest policy version recorded for ``path`` whose weights are still the ones on disk."""
    import db

    canonical = _canonical(path)
    fp = weights_fingerprint(canonical)
    best = None
    for v in db.list_model_versions(engine, kind="policy"):
        if _canonical(v.path) != canonical:
            continue
        recorded = (v.metrics or {}).get("weights_sha256")
        if fp and recorded and recorded != fp:
            continue  # the folder was overwritten by another model since
        if best is None or v.id > best:
            best = v.id
    return best


def ensure_registered(engine, path: str | Path) -> int:
    """The model version of ``path``, registering it first when the database does not know it."""
    found = find_policy_version(engine, path)
    if found is not None:
        return found
    metrics = None
    mfile = Path(path) / "metrics.json"
    if mfile.is_file():
        import json

        try:
            raw = json.loads(mfile.read_text())
            metrics = {k: v for k, v in raw.items() if isinstance(v, (int, float, str, bool)) or v is None}
        except (OSError, ValueError):
            metrics = None
    return register_policy(path, metrics=metrics, engine=engine)
