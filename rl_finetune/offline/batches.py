"""Prompt + completion sequences for the offline learners: tokenised, batched, and scored by the policy.

A sequence is a prompt and one completion of it, tokenised apart (the completion was sampled as a
continuation of the prompt's tokens and decoded on its own, :func:`db.types.shown_text`) and joined as
PPO's rollouts are: the prompts left-padded to one width ``P``, the completions right-padded after them,
so every completion starts at column ``P`` and only the positions ``P - 1 ..`` go through the LM head.

:func:`sequence_logprobs` is the pure part: ``sum_t log pi(y_t | x, y_<t)`` over each completion's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from base_policy.generate import encode_prompts
from base_policy.sampling import position_ids
from common.errors import UserError
from rl_finetune.ppo import core


@dataclass(frozen=True)
class Sequence:
    """Token ids of a prompt and of one completion of it."""

    prompt: tuple[int, ...]
    completion: tuple[int, ...]


def encode(tok, prompts: list[str], completions: list[str], max_prompt_tokens: int, max_completion_tokens: int):
    """One :class:`Sequence` per (prompt, completion): prompts cut from the left (PPO's prompt tokeniser),
    completions from the right. A completion with no tokens is a :class:`UserError`."""
    prompt_ids = encode_prompts(tok, prompts, max_prompt_tokens)
    out = []
    for i, (p, c) in enumerate(zip(prompt_ids, completions)):
        ids = tok(c, add_special_tokens=False)["input_ids"][:max_completion_tokens]
        if not ids:
            raise UserError(
                f"completion {i} ({c!r:.60}) has no tokens.", "drop empty completions from the labelled examples."
            )
        out.append(Sequence(tuple(p), tuple(ids)))
    return out


@dataclass
class SequenceBatch:
    """Sequences as tensors: prompts left-padded (B, P), completions right-padded (B, R)."""

    query: torch.Tensor  # (B, P)
    query_mask: torch.Tensor  # (B, P) 0 on the padding
    response: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) 1 on completion tokens

    def model_inputs(self) -> dict:
        """The model's inputs and ``start`` = P - 1, the first position that predicts a completion token."""
        ids = torch.cat([self.query, self.response], dim=1)
        attn = torch.cat([self.query_mask, self.mask], dim=1)
        return {
            "input_ids": ids,
            "attention_mask": attn,
            "position_ids": position_ids(attn),
            "start": self.query.shape[1] - 1,
        }


def collate(seqs: list[Sequence], pad_id: int, device="cpu") -> SequenceBatch:
    """The sequences as one :class:`SequenceBatch` on ``device``."""
    P = max(len(s.prompt) for s in seqs)
    R = max(len(s.completion) for s in seqs)
    query = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    response = torch.full((len(seqs), R), pad_id, dtype=torch.long)
    qmask, rmask = torch.zeros_like(query), torch.zeros_like(response)
    for i, s in enumerate(seqs):
        query[i, P - len(s.prompt) :] = torch.tensor(s.prompt)
        qmask[i, P - len(s.prompt) :] = 1
        response[i, : len(s.completion)] = torch.tensor(s.completion)
        rmask[i, : len(s.completion)] = 1
    return SequenceBatch(query.to(device), qmask.to(device), response.to(device), rmask.to(device))


def sequence_logprobs(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_t log softmax(logits)[t, tokens_t]`` over the masked tokens: logits (B, R, V), tokens and
    mask (B, R) -> (B,), float32. The log-probability of each whole completion."""
    return (core.logprobs_from_logits(logits, tokens) * mask.to(torch.float32)).sum(-1)


def trunk_pieces(hidden: torch.Tensor, batch: SequenceBatch) -> list[torch.Tensor]:
    """The frozen trunk's output (B, P + R, C) cut into one (tokens, C) piece per sequence (no padding)."""
    P = batch.query.shape[1]
    p_len, r_len = batch.query_mask.sum(-1).tolist(), batch.mask.sum(-1).tolist()
    return [hidden[i, P - p : P + r].detach().cpu() for i, (p, r) in enumerate(zip(p_len, r_len))]


def pad_pieces(pieces: list[torch.Tensor], batch: SequenceBatch) -> torch.Tensor:
    """The inverse of :func:`trunk_pieces` for another batch of the same sequences: (B, P + R, C), zeros
    on the padding (masked out of attention, and their outputs predict nothing that is scored)."""
    P, R = batch.query.shape[1], batch.response.shape[1]
    p_len = batch.query_mask.sum(-1).tolist()
    out = pieces[0].new_zeros(len(pieces), P + R, pieces[0].shape[-1])
    for i, (piece, p) in enumerate(zip(pieces, p_len)):
        out[i, P - p : P - p + piece.shape[0]] = piece
    return out.to(batch.query.device)
