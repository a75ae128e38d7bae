"""Rollout helpers: left-padded prompt batches, and pure sampling with a KV cache.

Sampling draws from the full ``softmax(logits / temperature)`` (no top-k/top-p), so the log-probs
the trainer computes later are those of the distribution that produced the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from base_policy.generate import left_pad as left_pad_ids
from rl_finetune.ppo.config import GenKwargs


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, P) left-padded
    attention_mask: torch.Tensor  # (B, P) 0 on the padding
    texts: list[str]


def tokenize_prompts(tokenizer, prompts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids per prompt, cut from the left to ``max_tokens`` (the end of a prompt matters most)."""
    fallback = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for ids in tokenizer(list(prompts))["input_ids"]:
        ids = list(ids)[-max_tokens:]
        out.append(ids if ids else [fallback])
    return out


def left_pad(token_lists: list[list[int]], pad_id: int, texts: list[str]) -> PromptBatch:
    """The prompts as one left-padded batch (the same padding as generation uses)."""
    ids, mask = left_pad_ids(token_lists, pad_id)
    return PromptBatch(ids, mask, list(texts))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the real tokens only, so left padding does not shift them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_mask(response: torch.Tensor, eos_id: int | None, stop_at_eos: bool) -> torch.Tensor:
    """1 on every response token up to and including the first EOS, 0 after it. (B, R) -> (B, R)."""
    if not stop_at_eos or eos_id is None:
        return torch.ones_like(response)
    is_eos = (response == eos_id).long()
    after = is_eos.cumsum(-1) - is_eos  # number of EOS strictly before each position
    return (after == 0).long()


def sample_from_logits(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from ``softmax(logits)``, by inverting the CDF: (B, V) -> (B,).

    Exact, and on CPU about 10x faster than ``torch.multinomial`` (measured here: 7 ms vs 90 ms
    for 16 rows of 8k-50k entries), which matters when it runs once per generated token.
    """
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)  # (B, V)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device) * cdf[:, -1:]
    # right=True: the first index whose CDF exceeds u, so zero-probability tokens are never picked
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def sample(
    policy,
    batch: PromptBatch,
    gen: GenKwargs,
    eos_id: int | None,
    pad_id: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses with a KV cache. ``policy`` is a :class:`PolicyWithValueHead` (unwrapped).

    Returns (response (B, R), mask (B, R)); tokens after an EOS are ``pad_id`` and masked out.
    """
    trunk, lm_head = policy.trunk, policy.lm_head
    ids, mask = batch.input_ids, batch.attention_mask
    B, R = ids.shape[0], gen.max_new_tokens
    device = ids.device
    pos = position_ids(mask)
    out = trunk(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    past = out.past_key_values
    h = out.last_hidden_state[:, -1]
    next_pos = pos[:, -1] + 1
    tokens = torch.full((B, R), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(R):
        logits = lm_head(h).float() / gen.temperature  # (B, V)
        if eos_id is not None and t < gen.min_new_tokens:
            logits[:, eos_id] = float("-inf")
        tok = sample_from_logits(logits, generator)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens[:, t] = tok
        if gen.stop_at_eos and eos_id is not None:
            done |= tok == eos_id
            if bool(done.all()):
                break
        if t == R - 1:
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        out = trunk(
            input_ids=tok[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        h = out.last_hidden_state[:, -1]
        next_pos = next_pos + 1
    return tokens, response_mask(tokens, eos_id, gen.stop_at_eos)


def decode_responses(tokenizer, response: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Response text without the closing EOS and the padding after it."""
    eos = tokenizer.eos_token_id
    texts = []
    for row, m in zip(response.tolist(), mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep and t != eos]
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
    return texts
