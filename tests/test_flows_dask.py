"""Where and how fan-out jobs run: a stage's jobs on Dask through Prefect (`AFFECTFLOW_TASK_RUNNER=dask`, a
real `distributed.LocalCluster` of two worker processes, made for the fan-out and closed with it; results in
job order), and retries for transient failures only."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # the nannies' settings did not stay behind


def test_dask_refuses_gpu_slots(monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "dask")
    with pytest.raises(ValueError, match="one GPU per worker process"):
        make_task_runner(2, ["0"])


def fail_once(marker: str, error: str) -> int:
    """A job that raises `error` on its first attempt (no `marker` file yet) and returns its attempt count."""
    path = Path(marker)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts == 1:
        raise {"connection": ConnectionError, "value": ValueError}[error](f"attempt {attempts}")
    return attempts


def test_jobs_are_retried_for_transient_errors_only(tmp_path, monkeypatch):
    """A dropped connection is retried and the job succeeds; a ValueError (a bug, bad input) fails at once."""
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "thread")
    transient = tmp_path / "transient"
    result = fan_out(
        "tests.test_flows_dask:fail_once", [{"marker": str(transient), "error": "connection"}], name="retry"
    )
    assert result == [2]
    permanent = tmp_path / "permanent"
    with pytest.raises(ValueError, match="attempt 1"):
        fan_out(
            "tests.test_flows_dask:fail_once", [{"marker": str(permanent), "error": "value"}], name="no-retry"
        )
    assert permanent.read_text() == "1"
