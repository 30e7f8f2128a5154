"""Run-time settings that do not change results, from the environment (params.yaml holds the rest).

- `AFFECTFLOW_WORKERS`: concurrent jobs in a Prefect fan-out (default: cores, at most 4).
- `AFFECTFLOW_DEVICE`: torch device (default: cuda when present, else cpu).
- `AFFECTFLOW_THREADS`: torch threads of every training or inference job (default 2). It is one fixed
  number, not cores / workers, because a CPU reduction split over another number of threads adds floats
  in another order: with it fixed, the same commit and params give identical outputs on one machine
  whatever AFFECTFLOW_WORKERS is.
"""

from __future__ import annotations

import contextlib
import os

DEFAULT_THREADS = 2


def num_workers(default: int | None = None) -> int:
    """Parallel workers for a fan-out; AFFECTFLOW_WORKERS overrides."""
    value = os.environ.get("AFFECTFLOW_WORKERS")
    if value:
        return max(1, int(value))
    return default or max(1, min(4, os.cpu_count() or 1))


def threads_per_job() -> int:
    """Torch threads of one job; AFFECTFLOW_THREADS overrides the fixed default."""
    return max(1, int(os.environ.get("AFFECTFLOW_THREADS") or DEFAULT_THREADS))


def device() -> str:
    """Torch device for heavy work; AFFECTFLOW_DEVICE overrides, else CUDA when present."""
    import torch

    return os.environ.get("AFFECTFLOW_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def configure_torch() -> str:
    """Fix torch's thread count and deterministic algorithms for this job; returns the device to use."""
    import torch

    torch.set_num_threads(threads_per_job())
    torch.use_deterministic_algorithms(True, warn_only=True)
    return device()


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
