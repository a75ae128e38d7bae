"""Matmul speed on this CPU in fp32 and in bf16, and which one the pipeline picks (``common.precision``).

Figures (one JSON line each): ``matmul_gflops`` for fp32, bf16 under autocast and bf16 tensors, at a
decoder's shapes (SmolLM2-135M: 512 token rows, d=576, MLP width 4 d) and at the vocabulary projection
(32 rows, 49,152 outputs); then ``choice``: the CPU capability torch reports, whether oneDNN has bf16
kernels here, and whether a ``bf16: true`` profile runs in bf16 on this machine.

Run: ``flock /tmp/rlhf-cpu.lock python benchmarks/bench_precision.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from common.precision import cpu_bf16_fast, use_bf16

SHAPES = {"mlp_up": (512, 576, 2304), "mlp_down": (512, 2304, 576), "lm_head": (32, 576, 49152)}


def gflops(rows: int, inner: int, out: int, mode: str, seconds: float) -> float:
    x, w = torch.randn(rows, inner), torch.randn(out, inner)
    if mode == "bf16":
        x, w = x.bfloat16(), w.bfloat16()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast")
    with ctx, torch.no_grad():
        for _ in range(3):
            torch.nn.functional.linear(x, w)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.nn.functional.linear(x, w)
            n += 1
        elapsed = time.perf_counter() - start
    return 2 * rows * inner * out * n / elapsed / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="timing per shape and mode")
    args = p.parse_args(argv)
    for name, (rows, inner, out) in SHAPES.items():
        figures = {
            mode: round(gflops(rows, inner, out, mode, args.seconds), 1) for mode in ("fp32", "autocast", "bf16")
        }
        print(json.dumps({"figure": "matmul_gflops", "shape": name, "threads": torch.get_num_threads(), **figures}))
    print(
        json.dumps(
            {
                "figure": "choice",
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "onednn_bf16": cpu_bf16_fast(),
                "bf16_profile_runs_in": "bf16" if use_bf16(True) else "fp32",
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
