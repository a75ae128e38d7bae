"""accelerate housekeeping of the PPO loop: the ``Accelerator``, reductions over processes (DDP), the optimiser step.

With one process every reduction returns its input; under ``torchrun`` they average (or sum) over
the processes, so every process takes the same decisions (early stop, KL coefficient, time budget).
"""

from __future__ import annotations

import torch

from common.precision import resolve_mixed_precision


def make_accelerator(mixed_precision: str):
    """An ``Accelerator`` for this run. ``cpu=True`` on a machine without CUDA lets
    ``torchrun --nproc_per_node N`` run N CPU processes (gloo DDP). In a single process, a second
    run with another precision resets accelerate's process-wide state instead of failing."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    cpu = not torch.cuda.is_available()
    mixed_precision = resolve_mixed_precision(mixed_precision, "cpu" if cpu else "cuda")  # fp32 where bf16 is slow
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError:
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def mean_of(accelerator, x: torch.Tensor) -> float:
    """The mean of scalar ``x`` over processes."""
    return accelerator.reduce(x.detach().to(accelerator.device), reduction="mean").item()


def mean_over_processes(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Every value of ``stats`` averaged over processes (one all-reduce, keys in sorted order)."""
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    return {k: float(v) for k, v in zip(keys, accelerator.reduce(values, reduction="mean").tolist())}


def any_process(accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is true on at least one."""
    flags = torch.tensor(float(flag), device=accelerator.device)
    return bool(accelerator.reduce(flags, reduction="sum").item() > 0)


def optimiser_step(accelerator, optimizer, params, loss: torch.Tensor, max_grad_norm: float | None) -> dict:
    """Backward pass (gradients averaged over processes), global-norm clipping, one optimiser step;
    ``{"grad_norm": ...}`` when clipping."""
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm) if max_grad_norm else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {} if grad_norm is None else {"grad_norm": float(grad_norm)}
