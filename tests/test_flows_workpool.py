"""Fan-out jobs on a Prefect work pool (`AFFECTFLOW_TASK_RUNNER=workpool:<pool>`): a real `prefect server
start`, two real `affectflow worker` processes. The jobs spread over both workers, and a job whose worker is
killed (SIGKILL to the worker and its run: a machine going down) is run again on the other one, after the
server's crash automation has seen its heartbeats stop."""

from __future__ import annotations

import contextvars
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.flows import fan_out, stop_server, wait_for_api
from pipeline.workpool import ensure_work_pool, start_worker
from tests.processes import descendants

pytestmark = pytest.mark.slow
POOL = "test-pool"
JOB = "tests.test_flows_workpool:square_where"
DEADLINE = 600  # seconds: about 2 min here when idle; a hang fails the test instead of the suite


def square_where(x: int, seconds: float, marker: str = "") -> dict[str, object]:
    """A job: x squared, with the worker that ran it (WORKER_NAME) and the attempt. With a `marker`, the
    first attempt writes it and then hangs, so that the test can kill its worker."""
    attempt = 1
    if marker:
        path = Path(marker)
        attempt = 1 if not path.exists() else json.loads(path.read_text())["attempt"] + 1
        path.write_text(json.dumps({"attempt": attempt, "worker": os.environ["WORKER_NAME"]}))
        if attempt == 1:
            time.sleep(600)
    time.sleep(seconds)
    return {"value": x * x, "worker": os.environ["WORKER_NAME"], "attempt": attempt}


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A Prefect server of its own (the full `prefect server start`, with the automation services), its
    database under tmp_path; this process and the workers talk to it, with the work pool made first (two
    workers making it at once race for SQLite's lock)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url, home = f"http://127.0.0.1:{port}/api", tmp_path / "prefect"
    for name, value in {
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),  # where the workers' results go
        "PREFECT_API_URL": url,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_DATABASE_TIMEOUT": "60",  # SQLite's busy wait, for a busy shared machine
    }.items():
        monkeypatch.setenv(name, value)  # for the server and the workers
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    # ... and for this process, over any settings already in force (the session's test harness)
    updates = {PREFECT_API_URL: url, PREFECT_LOCAL_STORAGE_PATH: home / "storage"}
    try:
        with temporary_settings(updates=updates):
            wait_for_api(url, timeout=180, process=process)
            ensure_work_pool(POOL)  # as `affectflow worker` does first
            yield url
    finally:
        stop_server(process)


def test_jobs_spread_over_two_workers_and_a_killed_workers_job_runs_again(server, tmp_path, monkeypatch):
    workers = {
        name: start_worker(
            POOL,
            name,
            env={"WORKER_NAME": name, "PREFECT_WORKER_QUERY_SECONDS": "1"},
            stdout=(tmp_path / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for name in ("first", "second")
    }
    marker = tmp_path / "hanging-job.json"
    killed: dict[str, str] = {}

    def kill_the_hanging_jobs_worker() -> None:
        while not marker.exists():
            time.sleep(0.2)
        name = json.loads(marker.read_text())["worker"]
        worker = workers[name]
        for pid in descendants(worker.pid) | {worker.pid}:  # the worker and its run: the machine is gone
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed["worker"] = name

    killer = threading.Thread(target=kill_the_hanging_jobs_worker, daemon=True)
    killer.start()
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", f"workpool:{POOL}")
    jobs = [{"x": x, "seconds": 1.0} for x in range(4)] + [{"x": 9, "seconds": 0.0, "marker": str(marker)}]
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["results"] = fan_out(JOB, jobs, name="work-pool-test")
        except BaseException as error:  # reported below, with the logs
            outcome["error"] = error

    # The settings in force here (the server fixture's) reach the thread through a copied context.
    runner = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    try:
        runner.start()
        runner.join(timeout=DEADLINE)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("*.log")))
        assert not runner.is_alive(), f"the jobs did not finish in {DEADLINE} s:\n{logs}"
        if "error" in outcome:
            raise AssertionError(f"fan_out failed:\n{logs}") from outcome["error"]
        results = outcome["results"]
    finally:
        for worker in workers.values():
            worker.send_signal(signal.SIGINT)
        for worker in workers.values():
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    assert [r["value"] for r in results] == [0, 1, 4, 9, 81]  # in job order
    assert {r["worker"] for r in results[:4]} <= {"first", "second"}
    assert killed, "the hanging job never started"
    assert {r["worker"] for r in results} == {"first", "second"}  # both workers ran jobs
    rerun = results[4]
    survivor = ({"first", "second"} - {killed["worker"]}).pop()
    assert rerun["attempt"] == 2 and rerun["worker"] == survivor  # run again, on the worker still alive
