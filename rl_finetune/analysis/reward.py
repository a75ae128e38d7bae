"""The reward model's token attribution: which tokens of a text move its score most, by occlusion.

RL fine-tuning sees the reward model only as ``reward_fn(texts) -> scores``
(``reward_training.load_reward_fn``), so the attribution is by occlusion, which needs nothing else:
each of the reward model's own tokens of a text (its tokenizer's pieces, found by their character
offsets) is replaced in turn by the tokenizer's mask token (deleted when it has none) and the text
is scored again. A token's attribution is ``score(text) - score(text with it masked)``: positive
when the token raised the score. The score is the log-odds of "good" (``kind="logit_diff"``), in
float32, so that the changes add on one scale and do not saturate as P(good) does near 0 or 1.
Gradient × input would need the reward model's embeddings, which this stage does not see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Tokens of one text that are occluded (one reward-model call each); later ones are left as they are.
MAX_TOKENS = 64


@dataclass
class TokenScores:
    """One text's occlusion attribution."""

    text: str
    score: float  # the reward model's log-odds of good for the whole text
    tokens: list[str]  # each occluded piece as it stands in the text
    spans: list[tuple[int, int]]  # its character span
    deltas: list[float]  # score(text) - score(text with the piece masked)
    truncated: bool  # the text had more than MAX_TOKENS pieces; the rest were not occluded

    def top(self, k: int = 5, *, sign: int = 1) -> list[tuple[str, float]]:
        """The ``k`` pieces that raised (sign 1) or lowered (sign -1) the score most, strongest first."""
        order = sorted(range(len(self.deltas)), key=lambda i: -sign * self.deltas[i])
        return [(self.tokens[i], self.deltas[i]) for i in order[:k] if sign * self.deltas[i] > 0]


def token_spans(tok, text: str, max_tokens: int = MAX_TOKENS) -> tuple[list[tuple[int, int]], bool]:
    """The character spans of ``text``'s pieces under ``tok`` (its words when the tokenizer gives no
    offsets), at most ``max_tokens``, and whether there were more."""
    if getattr(tok, "is_fast", False):
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        spans = [(int(s), int(e)) for s, e in offsets if e > s]
    else:
        spans = [m.span() for m in re.finditer(r"\S+", text)]
    return spans[:max_tokens], len(spans) > max_tokens


def occlusion(reward_fn, tok, text: str, *, max_tokens: int = MAX_TOKENS) -> TokenScores:
    """Score ``text`` and every variant of it with one of its pieces masked, in one ``reward_fn`` call."""
    spans, truncated = token_spans(tok, text, max_tokens)
    mask = getattr(tok, "mask_token", None) or ""
    variants = [text[:s] + mask + text[e:] for s, e in spans]
    scores = [float(x) for x in reward_fn([text, *variants])]
    return TokenScores(
        text=text,
        score=scores[0],
        tokens=[text[s:e] for s, e in spans],
        spans=spans,
        deltas=[scores[0] - x for x in scores[1:]],
        truncated=truncated,
    )


def reward_attribution(path: str | Path | None, texts: list[str], *, max_tokens: int = MAX_TOKENS) -> dict:
    """The occlusion attribution of the reward model at ``path`` (None = the latest) on ``texts``:
    ``{"model_dir", "kind", "examples": [TokenScores, ...]}``."""
    from transformers import AutoTokenizer

    from reward_training import load_reward_fn

    reward_fn = load_reward_fn(path, kind="logit_diff", bf16=False)
    folder = Path(reward_fn.model_dir)
    tok = AutoTokenizer.from_pretrained(folder)
    return {
        "model_dir": str(folder),
        "kind": "log-odds of good",
        "examples": [occlusion(reward_fn, tok, t, max_tokens=max_tokens) for t in texts],
    }
