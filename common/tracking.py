"""Run tracking through accelerate's trackers: TensorBoard event files beside a run's ``metrics.jsonl``.

Every training stage writes its metric rows to ``metrics.jsonl`` (or its own summary) as before; with
``tracking.tensorboard`` true (the default) the same scalars also go to ``<run_dir>/tensorboard/<name>/``
through :class:`accelerate.tracking.TensorBoardTracker`, with the run's config attached (TensorBoard's
HParams tab, and the whole config as a text entry ``config``). ``tensorboard --logdir artifacts`` then
shows every run side by side, offline::

    with open_tracker(work_dir, to_dict(cfg), name="ppo") as tracker:
        tracker.log({"reward_mean": 0.4, "kl": 0.1}, step=1)

The tracker is used directly, not through ``Accelerator(log_with=...)``: a second ``Accelerator`` would
reset the process-wide accelerate state of the PPO run that opened it. Like accelerate's own trackers it
writes on the main process only. With ``tracking.tensorboard`` false the tracker does nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The folder under a run's folder that holds its TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"


@dataclass
class TrackingConfig:
    """The ``tracking`` section: where every training stage sends its scalars besides its own files."""

    tensorboard: bool = field(
        default=True,
        metadata={"help": "also write TensorBoard event files to <run folder>/tensorboard/ (tensorboard --logdir)"},
    )


class Tracker:
    """Scalars of one run, sent to accelerate's TensorBoard tracker (``backend``), or nowhere (None)."""

    def __init__(self, backend=None):
        self.backend = backend

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the numeric entries of ``metrics`` (a metrics row: strings, lists and None are left out) at ``step``."""
        if self.backend is None:
            return
        values = scalars(metrics)
        if values:
            self.backend.log(values, step=int(step))

    def close(self) -> None:
        if self.backend is not None:
            self.backend.finish()
            self.backend = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries of a metrics row TensorBoard can plot: numbers and bools as floats, without ``step``."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if k != "step" and isinstance(v, (int, float, bool)) and not (isinstance(v, float) and math.isnan(v))
    }


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | str | float | int | None]:
    """``config`` flattened for TensorBoard's hparams (nested keys joined by dots, lists as text)."""
    out: dict[str, bool | str | float | int | None] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        elif value is None or isinstance(value, (bool, str, int, float)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def tracking_config(profile=None) -> TrackingConfig:
    """The ``tracking`` section of ``profile`` (a file or a profile already read; None = ``RLHF_CONFIG``)."""
    from common.config import load_config

    return load_config(TrackingConfig, "tracking", profile)


def open_tracker(
    run_dir: Path, config: Mapping[str, Any], *, name: str, settings: TrackingConfig | None = None
) -> Tracker:
    """A :class:`Tracker` for the run in ``run_dir`` named ``name``, with ``config`` (the run's config as a
    plain dict) attached. Use it as a context manager, or call :meth:`Tracker.close` (every ``log`` is
    flushed at once, so a run that dies keeps what it logged). ``settings``: the ``tracking`` section
    (None = read from the profile, ``RLHF_CONFIG``)."""
    settings = settings if settings is not None else tracking_config()
    return Tracker(start_tensorboard(Path(run_dir), dict(config), name) if settings.tensorboard else None)


def start_tensorboard(run_dir: Path, config: dict[str, Any], name: str):
    """accelerate's TensorBoard tracker writing to ``run_dir/tensorboard/name/``, started, config attached."""
    from accelerate.tracking import TensorBoardTracker

    backend = TensorBoardTracker(name, run_dir / TENSORBOARD_DIR)
    backend.start()
    backend.store_init_configuration(flat_hparams(config))
    text = "```json\n" + json.dumps(config, indent=2, default=str) + "\n```"  # markdown: kept as one block
    backend.log({"config": text}, step=0)
    log.debug("TensorBoard events for %s in %s", name, run_dir / TENSORBOARD_DIR / name)
    return backend
