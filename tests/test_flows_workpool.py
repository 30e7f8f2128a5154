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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
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
            # Deliver this process's queued events and logs while their server lives: at exit Prefect
            # would wait for them, retrying a server that is gone.
            EventsWorker.drain_all(timeout=30)
            APILogWorker.drain_all(timeout=30)
    finally:
        stop_server(process)


@pytest.fixture
def workers(server, tmp_path):
    """Two `affectflow worker`s of the pool (named first and second, each job seeing its worker's name in
    WORKER_NAME), polling every second; stopped with Ctrl-C at the end."""
    started = {
        name: start_worker(
            POOL,
            name,
            env={"WORKER_NAME": name, "PREFECT_WORKER_QUERY_SECONDS": "1"},
            stdout=(tmp_path / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for name in ("first", "second")
    }
    yield started
    for worker in started.values():
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
    for worker in started.values():
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def within_deadline(work: Callable[[], Any], logs: Path) -> Any:
    """`work()` (which fans out to the pool), failing with the server's and workers' logs instead of
    hanging when it does not end."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["results"] = work()
        except BaseException as error:  # reported below, with the logs
            outcome["error"] = error

    # The settings in force here (the server fixture's) reach the thread through a copied context.
    runner = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    runner.start()
    runner.join(timeout=DEADLINE)
    text = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))
    assert not runner.is_alive(), f"the jobs did not finish in {DEADLINE} s:\n{text}"
    if "error" in outcome:
        raise AssertionError(f"fan_out failed:\n{text}") from outcome["error"]
    return outcome["results"]


def test_jobs_spread_over_two_workers_and_a_killed_workers_job_runs_again(workers, tmp_path, monkeypatch):
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

    threading.Thread(target=kill_the_hanging_jobs_worker, daemon=True).start()
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", f"workpool:{POOL}")
    jobs = [{"x": x, "seconds": 1.0} for x in range(4)] + [{"x": 9, "seconds": 0.0, "marker": str(marker)}]
    results = within_deadline(lambda: fan_out(JOB, jobs, name="work-pool-test"), tmp_path)
    assert [r["value"] for r in results] == [0, 1, 4, 9, 81]  # in job order
    assert killed, "the hanging job never started"
    assert {r["worker"] for r in results} == {"first", "second"}  # both workers ran jobs
    rerun = results[4]
    survivor = ({"first", "second"} - {killed["worker"]}).pop()
    assert rerun["attempt"] == 2 and rerun["worker"] == survivor  # run again, on the worker still alive


def test_the_faces_stage_on_the_work_pool_equals_the_in_process_run(workers, tmp_path, monkeypatch):
    """The faces stage's videos as flow runs on the two workers: the same files, byte for byte, as the
    stage's jobs run in its own process (a small corpus of 4 videos)."""
    from pipeline.config import load_config
    from pipeline.demo import generate_corpus
    from stages import faces, frames
    from tests.test_crash_safety import CORPUS, PARAMS, tree

    root, frames_dir = tmp_path / "demo", tmp_path / "frames"
    generate_corpus(root, **CORPUS)
    frames.main(["--root", str(root), "--out", str(frames_dir), "--params", str(PARAMS)])
    config = load_config(PARAMS).faces
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "thread")
    faces.run(root, frames_dir, tmp_path / "in_process", config)
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", f"workpool:{POOL}")
    out = tmp_path / "on_the_pool"
    within_deadline(lambda: faces.run(root, frames_dir, out, config), tmp_path)
    assert tree(out) == tree(tmp_path / "in_process")
    for name in workers:  # both took videos (runs of 10-20 s each, taken by whichever worker is free)
        assert "for flow 'affectflow-job'" in (tmp_path / f"{name}.log").read_text(), name
