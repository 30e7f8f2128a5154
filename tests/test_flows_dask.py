"""A stage's jobs on Dask through Prefect (`AFFECTFLOW_TASK_RUNNER=dask`): a real `distributed.LocalCluster`
of two worker processes, made for the fan-out and closed with it; results in job order."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.flows import fan_out, make_task_runner

pytestmark = pytest.mark.slow


def square_in_worker(x: int, seconds: float) -> tuple[int, int]:
    """A job: (x squared, the pid of the process that ran it)."""
    time.sleep(seconds)
    return x * x, os.getpid()


def test_jobs_run_on_a_local_dask_cluster(monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "dask")
    monkeypatch.delenv("AFFECTFLOW_DASK_ADDRESS", raising=False)
    jobs = [{"x": x, "seconds": 0.5} for x in range(8)]
    results = fan_out("tests.test_flows_dask:square_in_worker", jobs, name="dask-test", workers=2)
    assert [value for value, _ in results] == [x * x for x in range(8)]  # in job order
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids  # two Dask worker processes, not this one


def test_dask_refuses_gpu_slots(monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "dask")
    with pytest.raises(ValueError, match="one GPU per worker process"):
        make_task_runner(2, ["0"])
