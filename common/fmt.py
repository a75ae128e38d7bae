"""Formatting numbers for logs, model cards and reports."""

from __future__ import annotations

#: What a missing number (``None``) prints as.
MISSING = "–"


def fmt_number(x, digits: int = 3, *, missing: str = MISSING) -> str:
    """``x`` with ``digits`` decimals (``0.75`` -> ``'0.750'``), ``missing`` for ``None``, and
    anything that is not a number as its ``str``."""
    if x is None:
        return missing
    try:
        return f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return str(x)
