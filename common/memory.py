"""The process's memory, as a report needs it: peak and current resident set size, and giving freed heap back.

Between the demo's stages the models of the last stage are garbage, but glibc keeps freed heap pages
mapped; :func:`release_freed_memory` collects the garbage and asks glibc (``malloc_trim``) to return
those pages, so the next stage starts from what is really in use. Elsewhere it only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import resource
import sys


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """The resident set size now, MiB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / (1024 * 1024)


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Collect garbage and return glibc's freed heap pages to the system (a no-op beyond collecting elsewhere)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
