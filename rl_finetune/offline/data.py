"""What the offline learners learn from, read through ``db`` (no SQL here), and the checks it must pass.

- KTO: :func:`kto_examples`, one ``(prompt, completion, good)`` per labelled completion, its judgements
  combined by majority (:func:`db.labelled_dataset`: skips dropped, ties dropped).
- DPO: :func:`dpo_pairs`, the pair judgements that chose a side (:func:`db.pairs.preference_pairs`), or a
  preference file in TRL's format (:func:`db.transfer.read_preference_file`).

The checks (:func:`check_pairs`, :func:`check_kto_examples`) fail with one line naming the fix, before any
model loads or anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from common.errors import UserError

log = logging.getLogger(__name__)

#: DPO needs at least this many pairs: with one pair the policy only learns to tell that pair apart.
MIN_PAIRS = 2


def without_empty_examples(examples: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """``examples`` without those whose completion is empty (the policy stopped at once: no token to
    learn from), with a log line saying how many were dropped."""
    kept = [e for e in examples if e[1]]
    if len(kept) < len(examples):
        log.info("KTO: dropped %d labelled completion(s) that are empty", len(examples) - len(kept))
    return kept


def without_empty_pairs(pairs: list) -> list:
    """``pairs`` without those with an empty side (no token to compare), with a log line saying how many."""
    kept = [p for p in pairs if p.chosen and p.rejected]
    if len(kept) < len(pairs):
        log.info("DPO: dropped %d preference pair(s) with an empty completion", len(pairs) - len(kept))
    return kept


def kto_examples(engine) -> list[tuple[str, str, bool]]:
    """``(prompt, completion, good)`` for every non-empty completion with a majority good/bad label, by
    completion id (an empty completion, which a policy writes when it stops at once, is dropped)."""
    import db

    examples = [(e.prompt, e.completion, e.label >= 0.5) for e in db.labelled_dataset(engine, combine="majority")]
    return without_empty_examples(examples)


def dpo_pairs(engine=None, path: Path | str | None = None) -> list:
    """The preference pairs DPO trains on: from the file at ``path`` when given (JSONL or a datasets
    folder with prompt/chosen/rejected), else from the database's pair judgements; pairs with an empty
    side are dropped."""
    if path is not None:
        from db.transfer import read_preference_file

        return without_empty_pairs(read_preference_file(Path(path)))
    from db.pairs import preference_pairs

    return without_empty_pairs(preference_pairs(engine))


def check_pairs(pairs: list) -> None:
    """Refuse fewer than :data:`MIN_PAIRS` pairs, an empty completion, and a pair whose chosen
    completion equals its rejected one (its DPO loss is constant: nothing to learn, and a labelling mistake)."""
    if len(pairs) < MIN_PAIRS:
        raise UserError(
            f"DPO got {len(pairs)} preference pair(s); it needs at least {MIN_PAIRS}.",
            "label more comparisons on the A/B page (or give a --pairs file with more pairs).",
        )
    for i, p in enumerate(pairs):
        where = f"pair {i}" + (f" (comparison {p.comparison_id})" if getattr(p, "comparison_id", None) else "")
        if not p.chosen or not p.rejected:
            raise UserError(f"{where} has an empty completion.", "drop the pair, or give both completions.")
        if p.chosen == p.rejected:
            raise UserError(
                f"{where} has the same completion as chosen and rejected.",
                "drop the pair: a comparison needs two different completions.",
            )


def check_kto_examples(examples: list[tuple[str, str, bool]]) -> tuple[int, int]:
    """``(n_good, n_bad)`` of KTO's examples; no examples, labels of one class only, or an empty completion
    are refused."""
    if not examples:
        raise UserError(
            "KTO found no good/bad labels (no completion has a majority label).",
            "label some completions first (make label, or the demo's simulated labellers).",
        )
    n_good = sum(1 for _, _, good in examples if good)
    n_bad = len(examples) - n_good
    if n_good == 0 or n_bad == 0:
        kind, other = ("good", "bad") if n_bad == 0 else ("bad", "good")
        raise UserError(
            f"KTO needs good and bad labels, but all {len(examples)} labelled completions are {kind}.",
            f"label some completions {other}: KTO's loss has nothing on the other side of its reference point.",
        )
    for i, (_, completion, _) in enumerate(examples):
        if not completion:
            raise UserError(f"labelled completion {i} is empty.", "drop empty completions from the examples.")
    return n_good, n_bad
