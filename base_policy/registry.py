"""Policies as model versions in the database: each saved policy folder is recorded with its weights'
fingerprint, and a PPO policy with its parent (the policy it started from)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from base_policy.loading import WEIGHT_FILES
from common.metrics import scalar_metrics

log = logging.getLogger(__name__)


def weights_fingerprint(path: str | Path) -> str | None:
    """SHA-256 of a folder's weight file (None for hub names): tells two models saved to the
    same folder apart."""
    path = Path(path)
    for name in WEIGHT_FILES:
        f = path / name
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()
    return None


def _canonical(path_or_name: str | Path) -> str:
    """Absolute path for folders, the name itself for hub models."""
    p = Path(path_or_name).expanduser()
    return str(p.resolve()) if p.exists() else str(path_or_name)


def _engine(engine):
    if engine is not None:
        return engine
    import db

    return db.connect()


def register_policy(
    path: str | Path,
    *,
    name: str | None = None,
    metrics: dict[str, Any] | None = None,
    parent_id: int | None = None,
    engine=None,
) -> int:
    """A new ``policy`` row in the model versions for ``path`` (with its weights' fingerprint)."""
    import db

    engine = _engine(engine)
    canonical = _canonical(path)
    metrics = dict(metrics or {})
    fp = weights_fingerprint(canonical)
    if fp:
        metrics["weights_sha256"] = fp
    version = db.register_model_version(
        engine,
        kind="policy",
        name=name or Path(canonical).name or canonical,
        path=canonical,
        parent_id=parent_id,
        metrics=metrics,
    )
    log.info("registered policy version %d for %s", version, canonical)
    return version


def find_policy_version(engine, path: str | Path) -> int | None:
    """The newest policy version recorded for ``path`` whose weights are still the ones on disk."""
    import db

    canonical = _canonical(path)
    fp = weights_fingerprint(canonical)
    best = None
    for v in db.list_model_versions(engine, kind="policy"):
        if _canonical(v.path) != canonical:
            continue
        recorded = (v.metrics or {}).get("weights_sha256")
        if fp and recorded and recorded != fp:
            continue  # the folder was overwritten by another model since
        if best is None or v.id > best:
            best = v.id
    return best


def ensure_registered(engine, path: str | Path) -> int:
    """The model version of ``path``, registering it first when the database does not know it."""
    found = find_policy_version(engine, path)
    if found is not None:
        return found
    metrics = None
    mfile = Path(path) / "metrics.json"
    if mfile.is_file():
        import json

        try:
            raw = json.loads(mfile.read_text())
            metrics = scalar_metrics(raw)
        except (OSError, ValueError):
            metrics = None
    return register_policy(path, metrics=metrics, engine=engine)
