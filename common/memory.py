"""The process's memory, as a report needs it: peak and current resident set size, and giving freed heap back.

Between the demo's stages the models of the last stage are garbage, but glibc keeps freed heap pages
mapped; :func:`release_freed_memory` collects the garbage and asks glibc (``malloc_trim``) to return
those pages, so the next stage starts from what is really in use. Elsewhere it only collects.
:func:`keep_freed_memory` is the other half: within a stage, freed blocks stay in the heap for the next
tensor of that size instead of being unmapped and page-faulted in again. It also puts Arrow's buffers (pandas 3
keeps its strings there, and ``datasets`` its tables) on that same heap: pyarrow's own allocator, mimalloc,
keeps what it frees for Arrow alone, so reading IMDB left about 230 MB that no tensor could reuse and
``malloc_trim`` could not return. 200 MB of tensors made after ``imdb_texts`` grew the RSS by 432 MB on mimalloc,
and by 288-421 MB on the heap (three runs: as much as fragmentation lets them reuse). :func:`release_freed_memory`
gives both back (``tests/test_runtime.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import resource
import sys

#: blocks up to this size come from the heap and are reused (:func:`keep_freed_memory`)
MMAP_THRESHOLD = 1 << 30
#: free memory at the top of the heap is given back to the kernel only above this (mallopt takes a C int)
TRIM_THRESHOLD = (1 << 31) - 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_malloc: str | None = None
#: pyarrow's choice of allocator (jemalloc, mimalloc or system), read once, when it first allocates
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


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
    """Collect garbage, empty pyarrow's own pool if it has one, and return glibc's freed heap pages to the system
    (off glibc, only the first two)."""
    gc.collect()
    if (pa := sys.modules.get("pyarrow")) is not None:  # a pool of pyarrow's own keeps its freed buffers
        pa.default_memory_pool().release_unused()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds, so freed blocks are reused instead of mapped anew and page-faulted
    in on every allocation (measured in :mod:`common.runtime`, whose :func:`~common.runtime.configure_cpu` every
    command calls first). Returns what was done, in a few words (also :func:`malloc_setting`). Does nothing off
    glibc, when ``RLHF_MALLOC_KEEP=0``, when glibc's own variables are set, or a second time."""
    global _malloc
    if _malloc is not None:
        return _malloc
    env = os.environ
    if env.get("RLHF_MALLOC_KEEP", "1").strip() == "0":
        _malloc = "glibc's default (RLHF_MALLOC_KEEP=0)"
    elif any(k in env for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        _malloc = "as your environment sets it"
    elif (libc := _libc()) is None:
        _malloc = "the platform's default (not glibc)"
    else:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        _malloc = f"freed blocks up to {MMAP_THRESHOLD >> 20} MB kept for reuse" if ok else "glibc's default"
        if ok and "pyarrow" not in sys.modules and ARROW_POOL_ENV not in env:  # read when pyarrow makes its pool
            env[ARROW_POOL_ENV] = "system"
    return _malloc


def malloc_setting() -> str:
    """What :func:`keep_freed_memory` did in this process."""
    return _malloc or "glibc's default"
