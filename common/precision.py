"""Whether bf16 autocast pays on this machine's CPU, and the one place every stage asks.

The profiles ask for bf16 (``bf16: true``, ``mixed_precision: bf16``) because on a CPU whose oneDNN
has a bf16 path (AVX-512 or AMX: most Intel Xeons since Skylake, AMD Zen 4 and later) it roughly
doubles matmul speed. On a CPU without one (AVX2 only: AMD Zen 2 and Zen 3, older Intel) oneDNN
falls back to a reference kernel, and a bf16 matmul is about 9x *slower* than fp32
(``benchmarks/bench_precision.py``: 19 against 171 GFLOP/s on an AMD EPYC Zen 3). There a request
for bf16 on the CPU runs in fp32 instead, with one log line saying so. CUDA is left to the caller.

``RLHF_CPU_BF16`` overrides the check: ``1`` keeps bf16 on any CPU, ``0`` never uses it, ``auto``
(the default) asks oneDNN.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)

ENV = "RLHF_CPU_BF16"


@functools.cache
def cpu_bf16_fast() -> bool:
    """True when bf16 matmuls on this CPU go through oneDNN's bf16 kernels (or ``RLHF_CPU_BF16=1``)."""
    choice = os.environ.get(ENV, "auto").strip().lower()
    if choice in ("1", "true", "yes", "on"):
        return True
    if choice in ("0", "false", "no", "off"):
        return False
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN: no fast bf16 either
        return False


@functools.cache
def _say_fp32() -> None:
    import torch

    log.warning(
        "bf16 was asked for, but this CPU (%s) has no bf16 matmul kernels, where bf16 runs about 9x slower "
        "than fp32: running in fp32 (%s=1 keeps bf16)",
        torch.backends.cpu.get_cpu_capability(),
        ENV,
    )


def use_bf16(requested: bool, device_type: str = "cpu") -> bool:
    """Whether to autocast to bf16: ``requested``, except on a CPU where bf16 is slow (see the module)."""
    if not requested or device_type != "cpu":
        return requested
    if cpu_bf16_fast():
        return True
    _say_fp32()
    return False


def resolve_mixed_precision(mixed_precision: str, device_type: str) -> str:
    """accelerate's ``mixed_precision`` to use: ``"no"`` for ``"bf16"`` on a CPU where bf16 is slow."""
    if mixed_precision == "bf16" and not use_bf16(True, device_type):
        return "no"
    return mixed_precision
