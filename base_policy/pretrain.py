"""Stage 1 of the offline default: pretrain a small GPT-2 on the IMDB reviews.

Users with internet start RLHF from ``gpt2`` or ``lvwerra/gpt2-imdb``. Here no weights can be
fetched, so ``python -m base_policy pretrain`` (``make base-model``) trains a
``GPT2LMHeadModel`` from scratch on the IMDB train text, in a fixed CPU time budget:

1. tokenizer: an 8k byte-level BPE trained on the reviews (default) or GPT-2's own vocabulary;
2. data: every review tokenized once, joined with ``<|endoftext|>`` into one stream (cached);
   a step trains on ``batch_size`` random windows of ``block_size`` tokens;
3. optional curriculum: the first ``curriculum_fraction`` of the budget trains on short windows
   (IMDB, or the Rotten Tomatoes one-sentence reviews), which are cheaper per token;
4. AdamW, linear warm-up, cosine decay over the budget (steps or minutes, whichever ends first),
   bf16 autocast on CPU;
5. evaluation on the IMDB test text (loss, perplexity, bits per character), samples from fixed
   prompts, an atomic save in plain Hugging Face format to ``$RLHF_ARTIFACTS/base_policy/``,
   and a row in the database's model versions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from common.config import check_ranges, to_dict
from common.errors import ConfigError, UserError
from common.imdb import DataConfig, load_imdb, rotten_tomatoes_sentences
from common.paths import artifacts_root, atomic_dir, base_policy_dir, new_run_id, owned_name, write_json
from common.precision import use_bf16
from common.tracking import open_tracker

log = logging.getLogger(__name__)

#: Openings every run samples from, so runs can be compared side by side in ``metrics.json``.
SAMPLE_PROMPTS = [
    "This movie was",
    "I watched this film last night and",
    "The acting in this movie",
    "What a waste of",
    "One of the best films",
    "I don't know much about Hungarian underground",
    "The plot of this movie",
    "I was really looking forward to",
    "If you like horror movies,",
    "My wife and I",
]


@dataclass
class PretrainConfig:
    """The ``pretrain`` section: a small GPT-2 trained on the IMDB text in a fixed budget."""

    tokenizer: Literal["bpe8k", "gpt2"] = field(
        default="bpe8k",
        metadata={
            "help": "bpe8k = byte-level BPE trained on the IMDB text (fast, default); gpt2 = GPT-2's own 50,257-token vocabulary"
        },
    )
    vocab_size: int = field(default=8192, metadata={"help": "entries of the bpe8k tokenizer"})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "start from this causal LM (path or hub name, e.g. gpt2 or lvwerra/gpt2-imdb) instead of random weights; its own tokenizer is used"
        },
    )
    n_layer: int = field(default=4, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads (n_embd must divide by it)"})
    n_embd: int = field(default=256, metadata={"help": "width of the residual stream"})
    n_ctx: int = field(
        default=256, metadata={"help": "context length of the model (positions); prompts + completions must fit"}
    )
    block_size: int = field(default=128, metadata={"help": "tokens per training window (<= n_ctx)"})
    batch_size: int = field(default=32, metadata={"help": "windows per optimisation step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=1e-4, metadata={"help": "learning rate at the end of the cosine decay"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    schedule: Literal["cosine", "linear", "constant"] = field(
        default="cosine", metadata={"help": "decay from lr to min_lr over the budget"}
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on matrices (not on biases, norms)"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2 (beta1 is 0.9)"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0 = off)"})
    dropout: float = field(
        default=0.0, metadata={"help": "dropout in the model (0: the budget is far below one epoch)"}
    )
    max_minutes: float | None = field(
        default=18.0, metadata={"help": "wall-clock budget of the training loop; null = no limit"}
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "step budget; null = no limit (one of max_minutes/max_steps is required). 0 with init_from = just save that model"
        },
    )
    curriculum: Literal["none", "short", "rt"] = field(
        default="none",
        metadata={
            "help": "first phase: none; short = IMDB windows of curriculum_block tokens; rt = Rotten Tomatoes one-sentence reviews"
        },
    )
    curriculum_fraction: float = field(
        default=0.2, metadata={"help": "share of the budget spent in the curriculum phase"}
    )
    curriculum_block: int = field(
        default=48, metadata={"help": "window length in the curriculum phase (tokens per step stay the same)"}
    )
    bf16: bool = field(
        default=True,
        metadata={"help": "bf16 autocast on CPU (faster matmuls, see docs/base_policy.md); weights stay fp32"},
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the model: more tokens/s on CPU after some seconds of compiling (figures in docs/base_policy.md); needs a C++ compiler (without one, or if compiling fails, training goes on uncompiled with a warning)"
        },
    )
    eval_every: int = field(
        default=0, metadata={"help": "evaluate on the test text every N steps (0 = only at the end)"}
    )
    eval_tokens: int = field(default=65536, metadata={"help": "test tokens per evaluation"})
    checkpoint_every: int = field(
        default=500, metadata={"help": "save a resumable checkpoint every N steps (0 = never)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of initialisation, batches and samples"})
    threads: int | None = field(default=None, metadata={"help": "torch threads (null = all cores)"})
    sample_prompts: list[str] = field(
        default_factory=lambda: list(SAMPLE_PROMPTS), metadata={"help": "fixed openings sampled into metrics.json"}
    )
    sample_max_new_tokens: int = field(default=40, metadata={"help": "tokens per sample in metrics.json"})

    def validate(self) -> None:
        check_ranges(
            self, "pretrain", positive=("lr",), positive_or_null=("max_minutes",), non_negative=("seed", "min_lr"),
            at_least_one=("batch_size", "eval_tokens", "block_size"),
        )  # fmt: skip
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"pretrain.max_steps={self.max_steps} must be >= 0 or null.", "set e.g. max_steps: 1000.")
        if self.max_minutes is None and self.max_steps is None:
            raise ConfigError(
                "pretrain needs a budget: max_minutes and max_steps are both null.",
                "set pretrain.max_minutes or pretrain.max_steps.",
            )
        if self.max_steps == 0 and not self.init_from:
            raise ConfigError(
                "pretrain.max_steps=0 only makes sense with init_from (save a model as is).",
                "set max_steps > 0 or init_from.",
            )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"pretrain.n_embd={self.n_embd} is not divisible by n_head={self.n_head}.",
                "pick n_head dividing n_embd (e.g. n_embd/64).",
            )
        if not 1 < self.block_size <= self.n_ctx:
            raise ConfigError(
                f"pretrain.block_size={self.block_size} must be in 2..n_ctx={self.n_ctx}.",
                "lower block_size or raise n_ctx.",
            )
        if not 1 < self.curriculum_block <= self.block_size:
            raise ConfigError(
                f"pretrain.curriculum_block={self.curriculum_block} must be in 2..block_size.",
                "lower curriculum_block.",
            )
        if not 0.0 <= self.curriculum_fraction < 1.0:
            raise ConfigError(
                f"pretrain.curriculum_fraction={self.curriculum_fraction} must be in [0, 1).", "use e.g. 0.2."
            )
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(
                f"pretrain.lr={self.lr}, min_lr={self.min_lr}: need 0 <= min_lr <= lr, lr > 0.",
                "fix the learning rates.",
            )
        if self.batch_size < 1:
            raise ConfigError("pretrain.batch_size must be >= 1.", "use e.g. 32.")

    @property
    def max_seconds(self) -> float | None:
        return None if self.max_minutes is None else 60.0 * self.max_minutes

    @property
    def arch(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed."""
        return {
            k: getattr(self, k)
            for k in ("tokenizer", "vocab_size", "init_from", "n_layer", "n_head", "n_embd", "n_ctx")
        }


# ----------------------------------------------------------------------------------- data


def encode_stream(tok, texts: Sequence[str], batch: int = 1000) -> np.ndarray:
    """Every text tokenized and followed by ``<|endoftext|>``, as one flat array."""
    eos = tok.eos_token_id
    backend = tok.backend_tokenizer  # the Rust tokenizer: no length warnings, fast batches
    parts = []
    for i in range(0, len(texts), batch):
        for enc in backend.encode_batch(list(texts[i : i + batch]), add_special_tokens=False):
            parts.append(enc.ids)
            parts.append([eos])
    dtype = np.uint16 if len(tok) <= 65535 else np.int32
    return np.fromiter((t for p in parts for t in p), dtype=dtype)


def cached_stream(tok, texts: Sequence[str], name: str, cache_dir: Path | None = None) -> np.ndarray:
    """:func:`encode_stream`, kept as ``.npy`` under ``$RLHF_ARTIFACTS/cache/pretrain/``."""
    from base_policy.tokenizer import corpus_fingerprint

    vocab_sig = corpus_fingerprint([tok.decode(list(range(min(len(tok), 300))))], len(tok))
    cache_dir = cache_dir or artifacts_root() / "cache" / "pretrain"
    path = cache_dir / f"{name}-{corpus_fingerprint(texts)}-{vocab_sig}.npy"
    if path.is_file():
        return np.load(path)
    arr = encode_stream(tok, texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(owned_name(path.name))
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return arr


def detokenize_rt(text: str) -> str:
    """Undo the Rotten Tomatoes sentences' tokenisation: ``"it's a mess , really ."`` ->
    ``"It's a mess, really."`` (so the curriculum does not teach spaced punctuation)."""
    text = re.sub(r" ([.,;:!?)%])", r"\1", text)
    text = re.sub(r"([(\$]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    text = re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    text = re.sub(r"\bi\b", "I", text)
    return text.strip()


def sample_batch(stream: np.ndarray, batch_size: int, block: int, rng: np.random.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``block`` tokens from ``stream``: (B, T) int64."""
    starts = rng.integers(0, len(stream) - block, size=batch_size)
    return torch.from_numpy(np.stack([stream[s : s + block] for s in starts]).astype(np.int64))


# ------------------------------------------------------------------------------ schedule


def lr_at(progress: float, step: int, cfg: PretrainConfig) -> float:
    """Learning rate after ``step`` steps at ``progress`` (0..1 of the budget)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "linear":
        return cfg.lr + (cfg.min_lr - cfg.lr) * p
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * p))


def budget_progress(step: int, elapsed: float, cfg: PretrainConfig) -> float:
    """How much of the budget is spent: the larger of the step and time fractions."""
    fracs = []
    if cfg.max_steps:
        fracs.append(step / cfg.max_steps)
    if cfg.max_seconds:
        fracs.append(elapsed / cfg.max_seconds)
    return max(fracs) if fracs else 1.0


# --------------------------------------------------------------------------------- model


def build_model(cfg: PretrainConfig, tok):
    """A randomly initialised ``GPT2LMHeadModel`` sized by ``cfg`` for ``tok``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=cfg.n_ctx,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    return GPT2LMHeadModel(config)


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (embeddings and linear weights), not on biases and norms."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    log.info(
        "optimizer: %d tensors with weight decay (%.2fM params), %d without",
        len(decay),
        sum(p.numel() for p in decay) / 1e6,
        len(no_decay),
    )
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, cfg.beta2),
    )


def autocast(cfg: PretrainConfig):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(cfg.bf16))


def maybe_compile(model, wanted: bool):
    """``torch.compile(model)`` when asked and a C++ compiler is on the PATH (inductor needs one on CPU);
    else the model itself, with a warning when compiling was asked for."""
    if not wanted:
        return model
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        log.warning(
            "pretrain.compile is on but no C++ compiler (g++, c++, clang++) is on the PATH: training "
            "without torch.compile (about 30%% slower). Fix: apt-get install g++, or set pretrain.compile=false."
        )
        return model
    return torch.compile(model)


@torch.no_grad()
def evaluate(model, stream: np.ndarray, cfg: PretrainConfig, chars_per_token: float | None = None) -> dict[str, float]:
    """Mean next-token loss on consecutive windows of ``stream`` (up to ``eval_tokens``), its
    perplexity, and bits per character (comparable across tokenizers)."""
    was_training = model.training
    model.eval()
    block = cfg.block_size
    n_windows = max(1, min(cfg.eval_tokens, len(stream) - 1) // block)
    total, count = 0.0, 0
    for i in range(0, n_windows, cfg.batch_size):
        rows = [stream[j * block : (j + 1) * block] for j in range(i, min(i + cfg.batch_size, n_windows))]
        x = torch.from_numpy(np.stack(rows).astype(np.int64))
        with autocast(cfg):
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += x[:, 1:].numel()
    model.train(was_training)
    mean = total / max(count, 1)
    out = {"val_loss": mean, "val_perplexity": math.exp(min(mean, 50.0)), "val_tokens": count}
    if chars_per_token:
        out["val_bits_per_char"] = mean / math.log(2) / chars_per_token
    return out


@torch.no_grad()
def sample_texts(model, tok, prompts: Sequence[str], max_new_tokens: int, seed: int = 0) -> list[str]:
    """One pure sample (temperature 1, no top-k/top-p: what PPO samples) per prompt, prompt included."""
    from base_policy.generate import GenerateConfig, generate_completions

    gcfg = GenerateConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, seed=seed)
    return [r["prompt"] + r["text"] for r in generate_completions(model, tok, list(prompts), gcfg)]


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_dir() -> Path:
    return artifacts_root() / "checkpoints" / "pretrain"


#: Beside ``last.pt`` once its run's model was saved (and registered): which run, and where it went.
FINISHED = "finished.json"
_FRESH_FIX = "start fresh without --resume (it replaces the base policy when done)"


def save_checkpoint(folder: Path, model, optimizer, tok, state: dict[str, Any]) -> None:
    """Everything needed to resume, written atomically (``last.pt`` + the tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tokenizer" / "tokenizer.json").is_file():
        with atomic_dir(folder / "tokenizer") as tmp:
            tok.save_pretrained(tmp)
    tmp = folder / owned_name("last.pt")
    try:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **state}, tmp)
        os.replace(tmp, folder / "last.pt")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(folder: Path, cfg: PretrainConfig) -> dict[str, Any]:
    """The checkpoint to resume, checked: it exists, is plain data (``weights_only``), fits ``cfg``'s
    architecture, and its run has not already finished and been saved. Each refusal is one line
    naming the run and the fix."""
    path = folder / "last.pt"
    if not path.is_file():
        raise UserError(
            f"--resume: no checkpoint at {str(path)!r}.", "run `python -m base_policy pretrain` without --resume first."
        )
    try:
        ckpt = torch.load(
            path, map_location="cpu", weights_only=True
        )  # tensors and plain values only: no pickled code runs
    except Exception as err:  # truncated, foreign or code-carrying files all end here
        first_line = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:200]  # torch's advice left out
        raise UserError(
            f"--resume: {str(path)!r} is not a checkpoint this program can read ({type(err).__name__}: {first_line}).",
            f"delete that run's folder (rm -r {str(folder)!r}) and {_FRESH_FIX}; checkpoints hold only tensors "
            "and plain values.",
        ) from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "step"} <= set(ckpt):
        raise UserError(
            f"--resume: {str(path)!r} is not a pretraining checkpoint (no model, optimizer and step in it).",
            f"delete that run's folder (rm -r {str(folder)!r}) and {_FRESH_FIX}.",
        )
    if ckpt.get("arch") != cfg.arch:
        raise UserError(
            f"--resume: the checkpoint in {str(folder)!r} was trained with {ckpt.get('arch')}, not {cfg.arch}.",
            f"resume with the same model settings, or {_FRESH_FIX}.",
        )
    finished = finished_run(folder)
    if finished is not None and finished.get("run") == ckpt.get("run", "?"):
        raise UserError(
            f"--resume: the pretraining run {finished['run']!r} already finished ({finished.get('steps')} steps) and was "
            f"saved to {finished.get('saved_to')!r}; resuming would train it again and replace that model.",
            f"{_FRESH_FIX}, or keep the saved model.",
        )
    return ckpt


def finished_run(folder: Path) -> dict | None:
    """What ``folder/finished.json`` says (None without it, or when it is unreadable)."""
    try:
        raw = json.loads((folder / FINISHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def mark_finished(result: PretrainResult, saved_to: Path) -> None:
    """Record that the run behind the last checkpoint is saved (its model registered), so that a
    later ``--resume`` does not train it again."""
    folder = checkpoint_dir()
    if (folder / "last.pt").is_file() and result.metrics.get("run"):
        write_json(
            folder / FINISHED,
            {"run": result.metrics["run"], "steps": result.metrics.get("steps"), "saved_to": str(saved_to)},
        )


# ------------------------------------------------------------------------------- training


@dataclass
class PretrainResult:
    model: Any
    tokenizer: Any
    metrics: dict[str, Any]
    losses: list[float]


@dataclass
class TokenData:
    """The tokenizer and every token stream one run trains and evaluates on."""

    tok: Any
    train: np.ndarray  # the IMDB train reviews, joined by <|endoftext|>
    test: np.ndarray  # the IMDB test reviews, for evaluation
    short: np.ndarray  # windows of the curriculum phase: the train stream, or the Rotten Tomatoes sentences
    chars_per_token: float  # of the test text: turns a per-token loss into bits per character


@dataclass
class LoopState:
    """What the loop carries from step to step, and what a checkpoint saves of it."""

    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0  # seconds of training loop, including those before a resume
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    run: str = field(default_factory=lambda: new_run_id("pretrain-"))  # named in the checkpoint and the log


def prepare_tokenizer(cfg: PretrainConfig, train_texts: Sequence[str]):
    """The tokenizer ``cfg`` asks for (``init_from`` brings its own)."""
    if cfg.init_from:
        from base_policy.loading import load_policy

        return load_policy(cfg.init_from)[1]
    from base_policy.tokenizer import build_tokenizer

    return build_tokenizer(cfg.tokenizer, train_texts, vocab_size=cfg.vocab_size)


def prepare_data(cfg: PretrainConfig, data_cfg: DataConfig) -> TokenData:
    """The tokenizer and the (cached) token streams of the IMDB text, plus the curriculum's."""
    dd = load_imdb(data_cfg)
    train_texts, test_texts = dd["train"]["text"], dd["test"]["text"]
    tok = prepare_tokenizer(cfg, train_texts)
    train_stream = cached_stream(tok, train_texts, "train")
    test_stream = cached_stream(tok, test_texts, "test")
    chars_per_token = sum(len(t) + 1 for t in test_texts) / max(len(test_stream), 1)
    log.info(
        "data: %d train tokens, %d test tokens (%.2f chars/token), vocab %d",
        len(train_stream),
        len(test_stream),
        chars_per_token,
        len(tok),
    )
    short_stream = train_stream
    if cfg.curriculum == "rt":
        short_stream = cached_stream(tok, [detokenize_rt(t) for t, _ in rotten_tomatoes_sentences()], "rt")
    return TokenData(tok, train_stream, test_stream, short_stream, chars_per_token)


def prepare_model(cfg: PretrainConfig, tok):
    """The model to train: ``init_from`` loaded, or a fresh one sized by ``cfg``."""
    if cfg.init_from:
        from base_policy.loading import load_policy

        model = load_policy(cfg.init_from)[0]
    else:
        model = build_model(cfg, tok)
    c = model.config  # the model's own sizes (an init_from model is not sized by cfg)
    log.info(
        "model: %.2fM parameters (%s, %d layers, d=%d, %d heads, ctx %d)",
        sum(p.numel() for p in model.parameters()) / 1e6,
        type(model).__name__,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", 0),
    )
    return model


def resume_from_checkpoint(
    model, optimizer, rng: np.random.Generator, cfg: PretrainConfig, ckpt: dict[str, Any] | None = None
) -> LoopState:
    """Load the last checkpoint (``ckpt``, already read by :func:`load_checkpoint`, or read now) into
    ``model``, ``optimizer``, ``rng`` and torch's generator."""
    folder = checkpoint_dir()
    ckpt = ckpt if ckpt is not None else load_checkpoint(folder, cfg)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        state = LoopState(ckpt["step"], ckpt["tokens_seen"], ckpt["elapsed"], ckpt["losses"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"--resume: the checkpoint in {str(folder)!r} does not fit this model ({type(err).__name__}: {first}).",
            f"delete that run's folder (rm -r {str(folder)!r}) and {_FRESH_FIX}.",
        ) from None
    state.run = str(ckpt.get("run") or "pretrain-unnamed")
    log.info(
        "resumed from %s (pretraining run %s) at step %d (%.1f min trained)",
        folder,
        state.run,
        state.step,
        state.elapsed / 60,
    )
    return state


def get_batch(data: TokenData, progress: float, cfg: PretrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """The windows of one step, (B, T): short ones in the curriculum phase (as many tokens per
    step), else ``batch_size`` windows of ``block_size`` from the train stream."""
    if cfg.curriculum != "none" and progress < cfg.curriculum_fraction:
        block = cfg.curriculum_block
        return sample_batch(data.short, max(1, cfg.batch_size * cfg.block_size // block), block, rng)
    return sample_batch(data.train, cfg.batch_size, cfg.block_size, rng)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def lm_loss(fwd, x: torch.Tensor, cfg: PretrainConfig) -> torch.Tensor:
    """Mean next-token cross-entropy of the windows ``x`` (B, T)."""
    with autocast(cfg):
        # the stream holds <|endoftext|> (= pad) between reviews: an explicit all-ones mask
        return fwd(input_ids=x, attention_mask=torch.ones_like(x), labels=x).loss


def train_step(fwd, model, optimizer: torch.optim.Optimizer, x: torch.Tensor, cfg: PretrainConfig):
    """One optimisation step on ``x``; returns (loss, the forward to use from now on).

    ``fwd`` is the compiled model or the model itself; when the compiled one fails (torch.compile
    broken on this machine) the step is redone on the model and training carries on uncompiled."""
    try:
        loss = lm_loss(fwd, x, cfg)
    except Exception as err:
        if fwd is model:
            raise
        log.warning(
            "torch.compile failed (%s: %s); training without it. Set pretrain.compile=false to skip the attempt.",
            type(err).__name__,
            str(err).splitlines()[0][:200] if str(err) else "",
        )
        fwd = model
        optimizer.zero_grad(set_to_none=True)
        loss = lm_loss(fwd, x, cfg)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), fwd


def checkpoint_state(state: LoopState, rng: np.random.Generator, cfg: PretrainConfig) -> dict[str, Any]:
    """Everything besides the weights that :func:`resume_from_checkpoint` restores."""
    return {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "elapsed": state.elapsed,
        "losses": state.losses,
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "arch": cfg.arch,
        "config": to_dict(cfg),
        "run": state.run,
    }


class LoopProgress:
    """The progress bar: seconds of the time budget, or steps; loss, tokens/s and lr every 10 steps."""

    def __init__(self, cfg: PretrainConfig, state: LoopState, enabled: bool):
        from tqdm.auto import tqdm

        self.by_time = not cfg.max_steps
        self.bar = tqdm(
            total=int(cfg.max_seconds or 0) if self.by_time else cfg.max_steps,
            initial=int(state.elapsed) if self.by_time else state.step,
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
            desc="pretrain",
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if self.by_time else None,
        )
        self.rate_t, self.rate_tokens = time.time(), state.tokens_seen

    def update(self, state: LoopState, lr: float, loop_seconds: float) -> None:
        if state.step % 10 == 0:
            now = time.time()
            rate = (state.tokens_seen - self.rate_tokens) / max(now - self.rate_t, 1e-9)
            self.rate_t, self.rate_tokens = now, state.tokens_seen
            self.bar.set_postfix(
                step=state.step, loss=f"{np.mean(state.losses[-10:]):.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.1e}"
            )
        if self.by_time:
            self.bar.update(min(int(loop_seconds), self.bar.total) - self.bar.n)
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def train_loop(
    model,
    optimizer: torch.optim.Optimizer,
    data: TokenData,
    state: LoopState,
    rng: np.random.Generator,
    cfg: PretrainConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    tracker=None,
) -> float:
    """Train until the step or time budget is spent, evaluating and checkpointing on the way;
    returns the seconds of training loop (those before a resume included). ``tracker``
    (:mod:`common.tracking`) gets the loss and lr of every step and every evaluation."""
    fwd = maybe_compile(model, cfg.compile)
    model.train()
    bar = LoopProgress(cfg, state, progress)
    loop_start = time.time() - state.elapsed
    while cfg.max_steps != 0:
        state.elapsed = time.time() - loop_start
        frac = budget_progress(state.step, state.elapsed, cfg)
        if frac >= 1.0:
            break
        lr = set_lr(optimizer, lr_at(frac, state.step, cfg))
        x = get_batch(data, frac, cfg, rng)
        loss, fwd = train_step(fwd, model, optimizer, x, cfg)
        state.step += 1
        state.tokens_seen += x.numel()
        state.losses.append(loss)
        if tracker is not None:
            tracker.log({"train/loss": loss, "train/lr": lr, "train/tokens_seen": state.tokens_seen}, state.step)
        if on_step:
            on_step(state.step, loss)
        bar.update(state, lr, time.time() - loop_start)
        if cfg.eval_every and state.step % cfg.eval_every == 0:
            ev = evaluate(model, data.test, cfg, data.chars_per_token)
            state.evals.append({"step": state.step, "tokens_seen": state.tokens_seen, **ev})
            if tracker is not None:
                tracker.log({f"eval/{k}": v for k, v in ev.items()}, state.step)
            log.info("step %d: val loss %.3f, perplexity %.1f", state.step, ev["val_loss"], ev["val_perplexity"])
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            state.elapsed = time.time() - loop_start
            save_checkpoint(checkpoint_dir(), model, optimizer, data.tok, checkpoint_state(state, rng, cfg))
    bar.close()
    return time.time() - loop_start


def final_metrics(
    model, data: TokenData, state: LoopState, cfg: PretrainConfig, *, train_seconds: float, started: float
) -> dict[str, Any]:
    """Evaluation on the test stream, samples from the fixed prompts, and the run's figures."""
    model.eval()
    final = evaluate(model, data.test, cfg, data.chars_per_token)
    samples = sample_texts(model, data.tok, cfg.sample_prompts, cfg.sample_max_new_tokens, seed=cfg.seed)
    metrics = {
        **final,
        "train_loss_last100": float(np.mean(state.losses[-100:])) if state.losses else None,
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "train_tokens_per_second": state.tokens_seen / train_seconds if train_seconds > 0 else None,
        "train_minutes": train_seconds / 60,
        "wall_minutes": (time.time() - started) / 60,
        "n_params": sum(p.numel() for p in model.parameters()),
        "tokenizer": "init_from" if cfg.init_from else cfg.tokenizer,
        "vocab_size": len(data.tok),
        "chars_per_token": data.chars_per_token,
        "evals": state.evals,
        "samples": samples,
        "run": state.run,
        "config": to_dict(cfg),
        "torch": torch.__version__,
        "nproc": os.cpu_count(),
    }
    log.info(
        "done: %d steps, %.2fM tokens, val loss %.3f, perplexity %.1f, %.3f bits/char",
        state.step,
        state.tokens_seen / 1e6,
        final["val_loss"],
        final["val_perplexity"],
        final.get("val_bits_per_char", float("nan")),
    )
    return metrics


def train(
    cfg: PretrainConfig,
    data_cfg: DataConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> PretrainResult:
    """Train the base policy; returns the model, tokenizer, metrics and the loss per step.
    Saves nothing but checkpoints (see :func:`save_base_policy`)."""
    # a missing, damaged, mismatched or finished checkpoint is refused before any data work
    ckpt = load_checkpoint(checkpoint_dir(), cfg) if resume else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = time.time()
    # 1. tokenizer and token streams
    data = prepare_data(cfg, data_cfg or DataConfig())
    # 2. model, optimizer, batch generator (restored from the checkpoint with --resume)
    model = prepare_model(cfg, data.tok)
    optimizer = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    state = resume_from_checkpoint(model, optimizer, rng, cfg, ckpt) if resume else LoopState()
    # 3. the loop: until the step or time budget is spent
    with open_tracker(checkpoint_dir(), to_dict(cfg), name=state.run) as tracker:  # tensorboard/<run>/ beside last.pt
        train_seconds = train_loop(
            model, optimizer, data, state, rng, cfg, progress=progress, on_step=on_step, tracker=tracker
        )
    # 4. evaluation and samples
    metrics = final_metrics(model, data, state, cfg, train_seconds=train_seconds, started=started)
    return PretrainResult(model=model, tokenizer=data.tok, metrics=metrics, losses=state.losses)


def generation_config(tok, max_new_tokens: int = 48):
    """The sampling defaults saved beside the model: pure sampling (what PPO uses), stop at EOS."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )


def save_policy_folder(folder: Path, model, tok, metrics: dict[str, Any] | None = None) -> Path:
    """Save ``model`` + ``tok`` + generation config (+ ``metrics.json``) to ``folder`` atomically:
    an interrupted save leaves the previous folder as it was."""
    folder = Path(folder)
    model.generation_config = generation_config(tok)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        if metrics is not None:
            write_json(tmp / "metrics.json", metrics)
    return folder


def save_base_policy(result: PretrainResult, folder: Path | None = None) -> Path:
    """Write the trained base policy to ``folder`` (default ``$RLHF_ARTIFACTS/base_policy``)."""
    return save_policy_folder(folder or base_policy_dir(), result.model, result.tokenizer, result.metrics)


def register_base_policy(path: Path, metrics: dict[str, Any], engine=None) -> int:
    """Record the saved base policy as a policy model version in the database; returns its id."""
    from base_policy.registry import register_policy

    slim = {k: v for k, v in metrics.items() if k not in ("samples", "evals", "config")}
    return register_policy(path, name="base_policy", metrics=slim, engine=engine)


def format_summary(metrics: dict[str, Any], path: Path) -> str:
    lines = [
        f"base policy saved to {path}",
        f"  val loss {metrics['val_loss']:.3f}  perplexity {metrics['val_perplexity']:.1f}"
        + (f"  bits/char {metrics['val_bits_per_char']:.3f}" if "val_bits_per_char" in metrics else ""),
        f"  {metrics['steps']} steps, {metrics['tokens_seen'] / 1e6:.2f}M tokens in {metrics['train_minutes']:.1f} min"
        + (f" ({metrics['train_tokens_per_second']:.0f} tokens/s)" if metrics.get("train_tokens_per_second") else ""),
        "  samples:",
    ]
    lines += [f"    {json.dumps(s, ensure_ascii=False)}" for s in metrics["samples"][:5]]
    return "\n".join(lines)
