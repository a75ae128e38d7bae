"""Process-wide CPU settings that every command makes first thing, before torch loads:
``os.environ.update(configure_cpu())``. This module imports nothing heavy.

**How idle OpenMP threads wait.** torch's CPU kernels run on libgomp, which wakes its worker threads for every
parallel region. Token-by-token sampling has hundreds of small regions per token, so the wait policy decides
its speed, and the best policy depends on what else runs. Measured on the 2-core machine (3 Dec,
SmolLM2-135M, 16 rows, bf16, the lean decoder):

| new tokens/s | other core idle | other core busy (a spinning process) |
|---|---|---|
| ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) | 292 | 411 |
| libgomp's default (spin a while, then sleep) | 568 | 152 |

So :func:`configure_cpu` looks at the machine for a fraction of a second and leaves libgomp's default when
the other cores are idle (the pipeline's rule is one heavy job at a time), and sets ``PASSIVE`` when they are
busy, or when it cannot tell (no ``/proc/stat``). An ``OMP_WAIT_POLICY`` you set yourself wins, and so does
``RLHF_OMP_WAIT=spin|sleep``. The choice only takes effect before the first ``import torch``.

**Freed memory is kept for reuse** (:func:`common.memory.keep_freed_memory`). glibc's malloc serves a block above its mmap threshold (at most 32 MB,
by default) with a fresh ``mmap`` and returns it to the kernel when freed, so the next tensor of that size
page-faults in every 4 KiB page again. PPO's (B, T, 49,152) logits and their float32 chunks are such
blocks: allocating, filling and summing a 100 MB tensor took 34 ms, 29 of them page faults, against 6 ms
once freed memory is kept (glibc 2.36, this machine). :func:`configure_cpu` raises the mmap and trim
thresholds with ``mallopt`` (glibc only; the demo still hands freed pages back between its steps with
:func:`common.memory.release_freed_memory`). Peak RSS is a high-water mark either way. ``RLHF_MALLOC_KEEP=0``, or
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``GLIBC_TUNABLES`` set yourself, leave malloc alone.
"""

from __future__ import annotations

import os
import sys
import time

from common.memory import keep_freed_memory, malloc_setting

__all__ = [
    "busy_cores",
    "chosen",
    "configure_cpu",
    "keep_freed_memory",
    "malloc_setting",
    "wait_policy",
    "wait_policy_env",
]

#: busy cores (besides this process) at or above which idle threads sleep
BUSY_THRESHOLD = 0.5
_choice: str | None = None
_env: dict[str, str] = {}


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = 0.2) -> float | None:
    """How many cores other processes kept busy over the next ``seconds`` (this one sleeps meanwhile);
    None where the kernel does not say (not Linux)."""
    first = _cpu_jiffies()
    time.sleep(seconds)
    second = _cpu_jiffies()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


def wait_policy_env(seconds: float = 0.2) -> dict[str, str]:
    """The OpenMP variables to set for this process and its children: ``{"OMP_WAIT_POLICY": "PASSIVE"}`` or
    nothing (see the module docstring). :func:`wait_policy` then says what was chosen and why. Called more
    than once, it keeps the first answer."""
    global _choice, _env
    if _choice is not None:
        return dict(_env)
    env = os.environ
    forced = env.get("RLHF_OMP_WAIT", "auto").strip().lower()
    _env = {}
    if "OMP_WAIT_POLICY" in env:
        _choice = f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} (set by you)"
    elif "torch" in sys.modules:
        _choice = "libgomp's default (torch was already loaded)"
    elif forced in ("spin", "sleep"):
        if forced == "sleep":
            _env = {"OMP_WAIT_POLICY": "PASSIVE"}
        _choice = f"{'PASSIVE' if forced == 'sleep' else 'spin, then sleep'} (RLHF_OMP_WAIT={forced})"
    else:
        busy = busy_cores(seconds)
        if busy is None or busy >= BUSY_THRESHOLD:
            _env = {"OMP_WAIT_POLICY": "PASSIVE"}
            why = "cannot tell how busy the CPUs are" if busy is None else f"other work keeps {busy:.1f} cores busy"
            _choice = f"PASSIVE ({why})"
        else:
            _choice = f"spin, then sleep (libgomp's default; other work keeps {busy:.1f} cores busy)"
    return dict(_env)


def configure_cpu(seconds: float = 0.2) -> dict[str, str]:
    """Both settings of this module: keeps freed memory for reuse, and returns the OpenMP variables for the
    caller to put in ``os.environ`` before torch loads (:func:`wait_policy_env`)."""
    keep_freed_memory()
    return wait_policy_env(seconds)


def chosen() -> bool:
    """Whether :func:`wait_policy_env` ran in this process."""
    return _choice is not None


def wait_policy() -> str:
    """The choice :func:`wait_policy_env` made in this process, or what the environment says."""
    return _choice or f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
