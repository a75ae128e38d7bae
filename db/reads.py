"""Read-only queries: the training set, model versions, counts for the stats page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session

from common.errors import UserError
from db.models import LABELS, MODEL_KINDS, Completion, Judgement, Labeler, Lease, ModelVersion, Prompt, utcnow
from db.types import Combine, Item, LabelledExample, ModelVersionInfo, shown_text

if TYPE_CHECKING:
    import pandas as pd


def labelled_dataset(engine: Engine, *, combine: Combine = "majority") -> list[LabelledExample]:
    """Every completion with at least one good/bad label, with its labels combined.

    ``majority``: 1.0 when more labellers said good than bad, 0.0 when fewer; ties are dropped.
    ``soft``: the share of good labels. Skips are ignored. Ordered by completion id."""
    if combine not in ("majority", "soft"):
        raise UserError(f"combine={combine!r} is not 'majority' or 'soft'.", "use one of those two.")
    n_good = func.sum(case((Judgement.label == "good", 1), else_=0))
    n = func.count(Judgement.id)
    q = (
        select(Completion.id, Prompt.text, Completion.text, n, n_good)
        .join(Judgement, Judgement.completion_id == Completion.id)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(Judgement.label != "skip")
        .group_by(Completion.id, Prompt.text, Completion.text)
        .order_by(Completion.id)
    )
    out: list[LabelledExample] = []
    with Session(engine) as s:
        for cid, prompt, completion, n_labels, good in s.execute(q):
            good = int(good or 0)
            if combine == "majority":
                if 2 * good == n_labels:
                    continue
                label = 1.0 if 2 * good > n_labels else 0.0
            else:
                label = good / n_labels
            text = shown_text(prompt, completion)
            out.append(LabelledExample(cid, prompt, completion, text, label, int(n_labels), good))
    return out


def _info(mv: ModelVersion) -> ModelVersionInfo:
    return ModelVersionInfo(mv.id, mv.kind, mv.name, mv.path, mv.parent_id, mv.metrics, mv.created_at)


def latest_model_version(engine: Engine, kind: str) -> ModelVersionInfo | None:
    """The most recently registered model of ``kind`` ('policy' or 'reward'), or None."""
    if kind not in MODEL_KINDS:
        raise UserError(f"model kind {kind!r} is not one of {list(MODEL_KINDS)}.", "use 'policy' or 'reward'.")
    with Session(engine) as s:
        mv = s.scalars(
            select(ModelVersion)
            .where(ModelVersion.kind == kind)
            .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
            .limit(1)
        ).first()
        return _info(mv) if mv else None


def get_model_version(engine: Engine, id: int) -> ModelVersionInfo | None:
    with Session(engine) as s:
        mv = s.get(ModelVersion, id)
        return _info(mv) if mv else None


def list_model_versions(engine: Engine, kind: str | None = None) -> list[ModelVersionInfo]:
    """All registered models (of one kind, if given), oldest first."""
    q = select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.id)
    if kind is not None:
        q = q.where(ModelVersion.kind == kind)
    with Session(engine) as s:
        return [_info(mv) for mv in s.scalars(q)]


def unlabelled_completions(engine: Engine, limit: int | None = None) -> list[Item]:
    """Completions nobody has labelled good or bad yet, oldest first (e.g. for reward scoring)."""
    n = Completion.n_labels
    q = (
        select(Completion.id, Prompt.text, Completion.text, Completion.model_version_id, n)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(n == 0)
        .order_by(Completion.id)
    )
    if limit is not None:
        q = q.limit(int(limit))
    with Session(engine) as s:
        return [Item(*row) for row in s.execute(q)]


def stats(engine: Engine) -> dict:
    """Counts for the stats page and ``python -m db stats`` (JSON-serialisable)."""
    with Session(engine) as s:

        def count(entity) -> int:
            return s.scalar(select(func.count()).select_from(entity)) or 0

        by_label = dict.fromkeys(LABELS, 0)
        by_label.update(
            {lab: n for lab, n in s.execute(select(Judgement.label, func.count()).group_by(Judgement.label))}
        )
        per_labeler: dict[str, dict[str, int]] = {}
        for name, lab, n in s.execute(
            select(Labeler.name, Judgement.label, func.count())
            .join(Judgement, Judgement.labeler_id == Labeler.id)
            .group_by(Labeler.name, Judgement.label)
        ):
            per_labeler.setdefault(name, dict.fromkeys(LABELS, 0))[lab] = n
        for row in per_labeler.values():
            row["total"] = sum(row[lab] for lab in LABELS)
        labelled = (
            s.scalar(select(func.count(func.distinct(Judgement.completion_id))).where(Judgement.label != "skip")) or 0
        )
        models = dict.fromkeys(MODEL_KINDS, 0)
        models.update({k: n for k, n in s.execute(select(ModelVersion.kind, func.count()).group_by(ModelVersion.kind))})
        n_completions = count(Completion)
        return {
            "prompts": count(Prompt),
            "completions": n_completions,
            "labelers": count(Labeler),
            "judgements": sum(by_label.values()),
            "judgements_by_label": by_label,
            "per_labeler": per_labeler,
            "labelled_completions": labelled,
            "unlabelled_completions": n_completions - labelled,
            "scored_completions": s.scalar(
                select(func.count()).select_from(Completion).where(Completion.reward_score.is_not(None))
            )
            or 0,
            "active_leases": s.scalar(select(func.count()).select_from(Lease).where(Lease.expires_at > utcnow())) or 0,
            "model_versions": models,
        }


JUDGEMENT_COLUMNS = [
    "judgement_id",
    "completion_id",
    "prompt_id",
    "labeler_id",
    "labeler",
    "label",
    "seconds",
    "flag",
    "comment",
    "created_at",
    "updated_at",
    "prompt",
    "completion",
    "model_version_id",
    "reward_score",
]


def judgement_rows(engine: Engine) -> list[dict]:
    """Every judgement joined with its labeller, prompt and completion, oldest first."""
    q = (
        select(
            Judgement.id,
            Judgement.completion_id,
            Completion.prompt_id,
            Judgement.labeler_id,
            Labeler.name,
            Judgement.label,
            Judgement.seconds,
            Judgement.flag,
            Judgement.comment,
            Judgement.created_at,
            Judgement.updated_at,
            Prompt.text,
            Completion.text,
            Completion.model_version_id,
            Completion.reward_score,
        )
        .join(Completion, Completion.id == Judgement.completion_id)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .join(Labeler, Labeler.id == Judgement.labeler_id)
        .order_by(Judgement.created_at, Judgement.id)
    )
    with Session(engine) as s:
        return [dict(zip(JUDGEMENT_COLUMNS, row)) for row in s.execute(q)]


def session_judgement_count(engine: Engine, labeler_id: int, session_key: str) -> int:
    """How many judgements ``labeler_id`` has standing from browser session ``session_key`` (the app's
    progress toward ``label.session_goal``; undone ones are gone, so they do not count)."""
    with Session(engine) as s:
        return (
            s.scalar(
                select(func.count(Judgement.id)).where(
                    Judgement.labeler_id == labeler_id, Judgement.session_key == session_key
                )
            )
            or 0
        )


def judgements_frame(engine: Engine) -> pd.DataFrame:
    """:func:`judgement_rows` as a pandas DataFrame (one row per judgement), for the stats page."""
    import pandas as pd

    frame = pd.DataFrame(judgement_rows(engine), columns=JUDGEMENT_COLUMNS)
    for col in ("created_at", "updated_at"):  # datetime64 even when empty, so .dt works
        frame[col] = pd.to_datetime(frame[col])
    return frame
