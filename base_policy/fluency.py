"""Fluency as a number: the mean negative log-likelihood per token of a text under a frozen language model.

RL can raise a reward while the text drifts into something no one would write. The start policy is
a fair judge of that drift: real review text costs it a few nats per token, word salad many more.
The demo reports the after-PPO samples' cost next to the same measure for real IMDB text
(:func:`real_continuations`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from base_policy.generate import context_length, encode_prompts, left_pad
from common.precision import use_bf16


@torch.no_grad()
def continuation_nll(
    model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 16, bf16: bool = True
) -> float:
    """Mean NLL per token (nats) of each continuation given its prompt under ``model``, averaged over
    every continuation token (NaN when there are none). The prompt is tokenised as generation tokenises
    it, and the continuation on its own, as the sampler produced it."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ctx = context_length(model)
    prompt_ids = encode_prompts(tokenizer, prompts, max(1, ctx // 2))
    # prompt + continuation must fit the model's positions: keep the continuation's start, the prompt's end
    cont_ids = [tokenizer(c, add_special_tokens=False)["input_ids"][: ctx - 1] for c in continuations]
    prompt_ids = [p[-(ctx - len(c)) :] for p, c in zip(prompt_ids, cont_ids)]
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(prompt_ids), batch_size):
        rows = [
            (p, c) for p, c in zip(prompt_ids[start : start + batch_size], cont_ids[start : start + batch_size]) if c
        ]
        if not rows:
            continue
        ids, mask = left_pad([p + c for p, c in rows], pad)
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cpu" and use_bf16(bf16)):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        width = ids.shape[1]
        for i, (_, c) in enumerate(rows):  # the continuation is the last len(c) tokens of each row
            total -= float(logp[i, width - 1 - len(c) :].sum())
            count += len(c)
    return total / count if count else math.nan


def real_continuations(
    texts: Sequence[str], n: int, *, prompt_words: int = 6, continuation_words: int = 24, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``n`` (prompt, continuation) pairs cut from real reviews: the first ``prompt_words`` words, then
    the next ``continuation_words`` (with their leading space, as a sampled continuation has)."""
    from common.imdb import clean_review

    rng = np.random.default_rng(seed)
    prompts, conts = [], []
    for i in rng.permutation(len(texts)):
        words = clean_review(texts[int(i)]).split()
        if len(words) < prompt_words + continuation_words:
            continue
        prompts.append(" ".join(words[:prompt_words]))
        conts.append(" " + " ".join(words[prompt_words : prompt_words + continuation_words]))
        if len(prompts) == n:
            break
    return prompts, conts
