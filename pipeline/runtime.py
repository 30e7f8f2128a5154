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
import ctypes
import ctypes.util
import functools
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_THREADS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
HEAP_ARENAS = 2


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


def gpu_slots() -> list[str]:
    """The GPUs jobs may use, as CUDA device ids: `AFFECTFLOW_GPUS` ("0,1,3"; "" for none), else every
    CUDA device present (none on a CPU machine)."""
    value = os.environ.get("AFFECTFLOW_GPUS")
    if value is not None:
        return [slot.strip() for slot in value.split(",") if slot.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def channels_last(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """On CUDA, the model's 4-D weights (convolutions: a ViT's patch embedding, CNN encoders) in
    channels-last layout, like the image batches, which are born NHWC (`to_tensor_batch`): cuDNN then runs
    its NHWC kernels, the fast ones for bf16, without converting layouts on every call. In place; a no-op
    elsewhere (CPU convolutions gain nothing here)."""
    import torch

    if torch.device(device).type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere (the heap settings below are glibc's); loaded once."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def steady_heap() -> bool:
    """Keep a long-running process's heap from growing with the work it has done (glibc only).

    glibc gives each thread that allocates its own arena, and freed memory inside an arena stays
    resident as fragments; over a 5-minute video `affectflow predict` grew by about 280 MB this way
    (`bench/bench_predict.py`). Two arenas (set here, at the start of the process, before torch starts
    its threads) and `release_heap` after each large step stop that growth. Returns False where it does not
    apply (not glibc). (A fixed 1 MiB mmap threshold stopped it too, but made encoding 2-3x slower:
    every batch's activations were mapped and zeroed afresh.)
    """
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, HEAP_ARENAS))


def release_heap() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere). Cheap
    enough to call after each large step, not inside a batch loop."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
