"""Rollout pieces: the prompt stream, left-padded prompt batches, pure sampling with a KV cache,
the checked scores of ``reward_fn``, and the :class:`Rollout` and :class:`LogprobsAndValues` records.

Sampling draws from the full ``softmax(logits / temperature)`` (no top-k/top-p), so the log-probs
the trainer computes later are those of the distribution that produced the tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from base_policy.generate import encode_prompts as tokenize_prompts  # noqa: F401
from base_policy.generate import left_pad as left_pad_ids

# the one prompt tokeniser, shared with generation (the trainer imports it from here)
from base_policy.sampling import Bf16Weights, position_ids, response_mask, sample_from_logits, sample_tokens  # noqa: F401
from common.errors import UserError
from db.types import shown_text
from rl_finetune.hydra import FrozenTrunk
from rl_finetune.ppo.config import GenKwargs


class PromptStream:
    """Deterministic prompt order: step ``s`` takes prompts ``[s*n, (s+1)*n)`` of a sequence of seeded
    permutations, so a resumed run sees the same prompts it would have seen."""

    def __init__(self, tokens: list[list[int]], texts: list[str], seed: int):
        self.tokens, self.texts, self.seed = tokens, texts, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.texts))}
        return self._perms[epoch]

    def take(self, step: int, n: int) -> list[int]:
        out = []
        for k in range(step * n, (step + 1) * n):
            epoch, i = divmod(k, len(self.texts))
            out.append(int(self._perm(epoch)[i]))
        return out


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (folded into torch's 63-bit range)."""
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63))
    return g


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, P) left-padded
    attention_mask: torch.Tensor  # (B, P) 0 on the padding
    texts: list[str]


def left_pad(token_lists: list[list[int]], pad_id: int, texts: list[str]) -> PromptBatch:
    """The prompts as one left-padded batch (the same padding as generation uses)."""
    ids, mask = left_pad_ids(token_lists, pad_id)
    return PromptBatch(ids, mask, list(texts))


@contextlib.contextmanager
def sampling_threads(n: int | None, device: torch.device):
    """Token-by-token sampling runs with ``n`` torch threads (on CPU; ``None``: unchanged)."""
    if n is None or device.type != "cpu" or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def sample(
    policy,
    batch: PromptBatch,
    gen: GenKwargs,
    eos_id: int | None,
    pad_id: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses with a KV cache (:func:`base_policy.sampling.sample_tokens`). ``policy`` is a
    :class:`PolicyWithValueHead` (unwrapped). Returns (response (B, R), mask (B, R)); tokens after an
    EOS are ``pad_id`` and masked out."""
    return sample_tokens(
        policy.lm, batch.input_ids, batch.attention_mask, max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature, min_new_tokens=gen.min_new_tokens, eos_id=eos_id,
        stop_at_eos=gen.stop_at_eos, pad_id=pad_id, generator=generator,
    )  # fmt: skip


def decode_responses(tokenizer, response: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Response text without the closing EOS and the padding after it."""
    eos = tokenizer.eos_token_id
    texts = []
    for row, m in zip(response.tolist(), mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep and t != eos]
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
    return texts


def check_scores(scores, n: int, where: str) -> torch.Tensor:
    """``reward_fn``'s output as a float tensor of ``n`` finite values, or a UserError naming the batch."""
    try:
        t = torch.as_tensor(
            np.asarray(scores.detach().float().cpu() if torch.is_tensor(scores) else scores, dtype=np.float64)
        )
    except (TypeError, ValueError) as err:
        raise UserError(
            f"reward_fn returned something that is not a list of numbers at {where} ({err}).",
            "make reward_fn(texts) return one float per text.",
        ) from None
    t = t.flatten().float()
    if t.numel() != n:
        raise UserError(
            f"reward_fn returned {t.numel()} scores for {n} texts at {where}.",
            "make reward_fn(texts) return exactly one score per text, in order.",
        )
    bad = (~torch.isfinite(t)).nonzero().flatten().tolist()
    if bad:
        raise UserError(
            f"reward_fn returned NaN/inf for {len(bad)} of {n} texts at {where} (first at index {bad[0]}).",
            "fix the reward function so it returns a finite score for every text.",
        )
    return t


@dataclass
class Rollout:
    """Phase 1's output: prompts, sampled responses and their scores."""

    query: torch.Tensor  # (B, P) left-padded prompt ids
    query_mask: torch.Tensor  # (B, P)
    response: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) response tokens (through EOS)
    scores: torch.Tensor  # (B,) raw scores from reward_fn
    prompts: list[str]
    responses: list[str]
    trunk_hidden: torch.Tensor | None = None  # (B, T, C) the frozen layers' output, once computed (hydra)

    def model_inputs(self, idx=None):
        q, qm, r = self.query, self.query_mask, self.response
        if idx is not None:
            q, qm, r = q[idx], qm[idx], r[idx]
        ids = torch.cat([q, r], dim=1)
        attn = torch.cat([qm, torch.ones_like(r)], dim=1)
        return {"input_ids": ids, "attention_mask": attn, "position_ids": position_ids(attn), "start": q.shape[1] - 1}

    @property
    def texts(self) -> list[str]:
        """Prompt + response, what ``reward_fn`` scores."""
        return [shown_text(p, r) for p, r in zip(self.prompts, self.responses)]


def join_rollouts(chunks: list[Rollout], pad_id: int) -> Rollout:
    """One Rollout from the generation batches of a step (prompts left-padded to the longest)."""
    if len(chunks) == 1:
        return chunks[0]
    P = max(c.query.shape[1] for c in chunks)

    def lpad(x, value):
        return torch.nn.functional.pad(x, (P - x.shape[1], 0), value=value)

    hidden = None
    if all(c.trunk_hidden is not None for c in chunks):  # left-padded like the prompts (pad rows are masked)
        hidden = torch.cat([torch.nn.functional.pad(c.trunk_hidden, (0, 0, P - c.query.shape[1], 0)) for c in chunks])
    return Rollout(
        trunk_hidden=hidden,
        query=torch.cat([lpad(c.query, pad_id) for c in chunks]),
        query_mask=torch.cat([lpad(c.query_mask, 0) for c in chunks]),
        response=torch.cat([c.response for c in chunks]),
        mask=torch.cat([c.mask for c in chunks]),
        scores=torch.cat([c.scores for c in chunks]),
        prompts=sum((c.prompts for c in chunks), []),
        responses=sum((c.responses for c in chunks), []),
    )


@dataclass
class Sampler:
    """Sample and score, for rollouts and evals alike: responses to prompts, ``batch_size`` at a time
    (KV cache), decoded, and scored by ``reward_fn`` on prompt + response. One :class:`Rollout` per batch."""

    tokenizer: object
    reward_fn: Callable[[list[str]], object]
    gen_kwargs: GenKwargs
    batch_size: int
    eos_id: int | None
    pad_id: int
    device: torch.device
    autocast: Callable  # the accelerator's autocast context
    threads: int | None = 1  # torch threads while sampling (sampling_threads)
    weights: Bf16Weights = field(default_factory=lambda: Bf16Weights(enabled=False))  # bf16 weight copies
    trunk: FrozenTrunk | None = None  # with a shared frozen trunk: keep its output from sampling (hydra)

    @torch.no_grad()
    def __call__(
        self, policy, tokens: list[list[int]], texts: list[str], generator, where: str, timer
    ) -> Iterator[Rollout]:
        """``policy``: an unwrapped :class:`PolicyWithValueHead`; ``where`` names the batch in errors
        (``"{where} chunk {c}"``); ``timer("reward")`` times ``reward_fn``."""
        size, dev = self.batch_size, self.device
        for c, start in enumerate(range(0, len(texts), size)):
            batch = left_pad(tokens[start : start + size], self.pad_id, texts[start : start + size])
            batch.input_ids, batch.attention_mask = batch.input_ids.to(dev), batch.attention_mask.to(dev)
            record = self.trunk.recording() if self.trunk is not None else contextlib.nullcontext([])
            with self.autocast(), sampling_threads(self.threads, dev), self.weights.sampling(policy.lm):
                with record as trunk_outputs:
                    response, mask = sample(policy, batch, self.gen_kwargs, self.eos_id, self.pad_id, generator)
            length = batch.input_ids.shape[1] + response.shape[1]
            hidden = self.trunk.assemble(trunk_outputs, length) if self.trunk is not None else None
            responses = decode_responses(self.tokenizer, response, mask)
            with timer("reward"):
                full = [shown_text(p, r) for p, r in zip(batch.texts, responses)]
                scores = check_scores(self.reward_fn(full), len(full), f"{where} chunk {c}")
            yield Rollout(
                batch.input_ids, batch.attention_mask, response, mask, scores.to(dev), batch.texts, responses, hidden
            )


@dataclass
class LogprobsAndValues:
    """Phase 2's output, all (B, R) over the response tokens unless noted."""

    logprobs: torch.Tensor  # the policy's, before this step's updates ("old" log-probs)
    values: torch.Tensor  # the value head's, before this step's updates (float32)
    entropy: torch.Tensor  # the policy's next-token entropy
    ref_logprobs: torch.Tensor  # the frozen reference's
    ref_logp_full: torch.Tensor | None = None  # (B, R, V) the reference's log-softmax, only with kl_loss_coef

    def __getitem__(self, idx) -> LogprobsAndValues:
        """The episodes ``idx`` (a minibatch)."""
        full = self.ref_logp_full[idx] if self.ref_logp_full is not None else None
        return LogprobsAndValues(self.logprobs[idx], self.values[idx], self.entropy[idx], self.ref_logprobs[idx], full)
