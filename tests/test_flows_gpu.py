"""GPU jobs through Prefect (`pipeline.flows.fan_out(..., gpu=True)`): one spawned worker process per GPU,
each pinned to its own GPU with CUDA_VISIBLE_DEVICES before torch touches CUDA. On this CPU machine the GPU
ids come from AFFECTFLOW_GPUS; the pinning is the same code a GPU machine runs."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.flows import fan_out, gpu_slots, make_task_runner

pytestmark = pytest.mark.slow


def pinned_gpu(seconds: float) -> tuple[int, str | None]:
    """A job: (its worker's pid, the GPUs that worker may see), after holding the worker a while so
    that the pool starts all its workers."""
    time.sleep(seconds)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_worker_gets_its_own_gpu(monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_GPUS", "3,5")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    results = fan_out("tests.test_flows_gpu:pinned_gpu", [{"seconds": 1.0}] * 6, name="gpu-test", gpu=True)
    by_worker: dict[int, set[str | None]] = {}
    for pid, visible in results:
        by_worker.setdefault(pid, set()).add(visible)
    assert len(by_worker) == 2, by_worker  # one worker per GPU, not one per core
    assert all(len(seen) == 1 for seen in by_worker.values())  # a worker keeps its GPU
    assert sorted(next(iter(seen)) for seen in by_worker.values()) == ["3", "5"]
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # the stage itself is not pinned


def test_gpu_limit_and_cpu_fallback(monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_GPUS", "0,1,2,3")
    assert gpu_slots() == ["0", "1", "2", "3"]
    results = fan_out(
        "tests.test_flows_gpu:pinned_gpu", [{"seconds": 0.5}] * 4, name="gpu-limit", gpu=True, workers=1
    )
    assert {visible for _, visible in results} == {"0"}  # at most `workers` GPUs: here one
    monkeypatch.setenv("AFFECTFLOW_GPUS", "")
    assert gpu_slots() == []  # no GPU: GPU jobs run on CPU workers as any other job
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "thread")
    with pytest.raises(ValueError, match="one GPU per worker process"):
        make_task_runner(2, ["0", "1"])
