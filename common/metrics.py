"""Metrics as the database stores them: flat mappings of scalars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``metrics`` whose value is a number, a string, a bool or None (lists,
    dicts and other nested values are left out), e.g. a run's summary before it is registered."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
