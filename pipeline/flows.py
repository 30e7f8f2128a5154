"""Prefect flows that schedule the heavy jobs inside DVC stages.

DVC owns the DAG: a stage calls `fan_out` for its independent jobs (videos, seeds) and Prefect runs them
with bounded concurrency, one named task per job, retried on transient errors. Nothing here re-encodes the
pipeline's stage order.

Where the jobs run is a run-time setting, not a param (it does not change results):
- `AFFECTFLOW_TASK_RUNNER=process` (default): the tasks run in threads of the stage, each handing its job
  to a pool of spawned job processes (`job_processes`; safe after CUDA init). The job processes only
  compute: Prefect's engine, its API traffic and its import stay in the stage;
- `thread`: the jobs run in threads of the stage (for jobs that release the GIL);
- `dask`: Prefect's Dask task runner, on the cluster at `AFFECTFLOW_DASK_ADDRESS` or else on a local
  `distributed.LocalCluster` of worker processes (`dask_task_runner`);
- `workpool:<pool>`: each job a flow run on a Prefect work pool (`pipeline.workpool`);
- `module:attr`: any other Prefect TaskRunner factory.
`AFFECTFLOW_WORKERS` bounds concurrency. GPU-bound jobs (`fan_out(..., gpu=True)`) get one job process
per GPU (`AFFECTFLOW_GPUS`, default every CUDA device), each pinned to its own GPU.

The API: `PREFECT_API_URL` when set (`affectflow repro` sets it for all the stages of one `dvc repro`;
or `prefect server start`, Prefect Cloud); otherwise `fan_out` starts a temporary local server for the
stage (`ensure_prefect_api`), while its job processes start.

Nothing outlives the stage (`pipeline.resume` lifelines, Linux): the temporary server gets SIGKILL from
the kernel when the stage's main thread ends (`PR_SET_PDEATHSIG`), job processes exit once their parent
is gone (they poll it) and never commit a unit after that, and while `fan_out` runs the stage itself
exits, killing its children, when its own parent (`dvc repro`) dies.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import prefect
from prefect import flow, task
from prefect.context import refresh_global_settings_context
from prefect.settings import get_current_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipeline.resume import exit_with_parent, parent_death_preexec, watch_parent
from pipeline.runtime import gpu_slots, num_workers


def resolve(path: str) -> Callable[..., Any]:
    """Import `package.module:attribute`."""
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"expected 'module:attribute', got '{path}'")
    return getattr(importlib.import_module(module_name), attribute)


def _job_initializer(
    threads: int, parent: int, slots: Sequence[str] = (), claims: str = "", function: str = ""
) -> None:
    """Runs first in every job process; `parent` is the pid of the stage that owns the pool.

    With GPU `slots`, the worker claims the first free one (a file created exclusively in the pool's
    `claims` folder: atomic, so no two workers of a pool take the same GPU) and sees only that GPU
    (`CUDA_VISIBLE_DEVICES`, set before torch touches CUDA): its jobs run on "cuda", which is that GPU.
    The jobs' `function` is imported here, while the stage is still setting up its Prefect flow run.
    """
    # A worker must not outlive the stage: once its parent is gone it exits (killing its children),
    # instead of writing into the stage's output after DVC has given up on it.
    watch_parent(parent)
    if slots:
        os.environ["CUDA_VISIBLE_DEVICES"] = _claim(slots, Path(claims))
    # Each worker gets an equal share of the cores instead of every process claiming all of them.
    import torch

    import pipeline  # noqa: F401  (installs the torchvision shim in the fresh process)

    torch.set_num_threads(threads)
    if function:
        resolve(function)


def _claim(slots: Sequence[str], claims: Path) -> str:
    """The first slot whose claim file this process creates (O_EXCL: exactly one creator wins)."""
    for slot in slots:
        try:
            os.close(os.open(claims / f"gpu-{slot}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return slot
    raise RuntimeError(f"more GPU workers than GPUs ({', '.join(slots)}): every slot in {claims} is taken")


def dask_task_runner(workers: int) -> TaskRunner:
    """Prefect's Dask task runner: on the cluster whose scheduler is `AFFECTFLOW_DASK_ADDRESS`
    (`tcp://host:8786`, started elsewhere: `dask scheduler` + `dask worker`, or dask-jobqueue on SLURM/PBS),
    else on a `distributed.LocalCluster` of `workers` single-threaded worker processes, made for the
    stage and closed with it."""
    from prefect_dask import DaskTaskRunner

    address = os.environ.get("AFFECTFLOW_DASK_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


def make_task_runner(workers: int, slots: Sequence[str] = ()) -> TaskRunner:
    """The task runner for `workers` concurrent jobs. For the process runner (the default) these are
    threads of the stage that each hand their job to the job processes (`job_processes`)."""
    kind = os.environ.get("AFFECTFLOW_TASK_RUNNER", "process")
    if slots and kind != "process":
        raise ValueError(
            f"GPU jobs need AFFECTFLOW_TASK_RUNNER=process (one GPU per worker process), not '{kind}'; "
            "on a Dask cluster give each worker one GPU (`dask-cuda-worker`, or CUDA_VISIBLE_DEVICES)"
        )
    if kind in ("process", "thread"):
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        return dask_task_runner(workers)
    return resolve(kind)()


@contextmanager
def job_processes(workers: int, slots: Sequence[str] = (), function: str = "") -> Iterator[None]:
    """With the process runner, a pool of `workers` spawned job processes (safe after CUDA init) that
    `run_job` hands its job to, started at once so that their imports overlap the flow's set-up.

    Prefect's own process runner would run its task engine in every worker: each would import Prefect
    and talk to the API (about 2-3 s more per stage here). Here Prefect tracks, names and retries the
    tasks in the stage and the workers only compute.
    """
    if os.environ.get("AFFECTFLOW_TASK_RUNNER", "process") != "process":
        yield
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with tempfile.TemporaryDirectory(prefix="affectflow-gpus-") as claims:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_job_initializer,
            initargs=(threads, os.getpid(), tuple(slots), claims, function),
        )
        # Every worker now: a spawn pool would start them one at a time, on demand, and a worker that has
        # finished its set-up takes the next job before a second one is started (CPython's own switch for
        # fork pools; tests/test_flows_gpu.py checks that the jobs reach every worker).
        pool._safe_to_dynamically_spawn_children = False
        pool.submit(int)
        with _jobs_run_by(lambda function, kwargs: pool.submit(_call, function, kwargs).result()):
            try:
                yield
            finally:
                pool.shutdown(wait=True, cancel_futures=True)


# Where `run_job` sends its job while a fan-out runs: the stage's job processes, a work pool; None: in place.
_job_executor: Callable[[str, dict[str, Any]], Any] | None = None


@contextmanager
def _jobs_run_by(executor: Callable[[str, dict[str, Any]], Any]) -> Iterator[None]:
    global _job_executor
    _job_executor = executor
    try:
        yield
    finally:
        _job_executor = None


def start_local_server() -> tuple[subprocess.Popen[bytes], str]:
    """Start a local Prefect API server (SQLite in `PREFECT_HOME`, no UI) without waiting for it; returns
    the process and its API URL. Call it from the main thread: the kernel kills the server (SIGKILL) when
    the thread that started it ends, so it dies with this process even when that is SIGKILLed (Prefect's
    own temporary server stops from `atexit`, which a SIGKILLed stage never runs).

    The server is Prefect's own app under uvicorn, as Prefect's temporary server runs it; it imports
    Prefect's server code in its own process (about 4 s of CPU here), not in this one.
    """
    with socket.socket() as probe:  # a free port, chosen by the kernel
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tied = threading.current_thread() is threading.main_thread()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent)]
    command += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "error", "--lifespan", "on"]
    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    settings = get_current_settings().to_environment_variables(exclude_unset=True)
    process = subprocess.Popen(
        command,
        env={**os.environ, **server_env, **settings},
        preexec_fn=parent_death_preexec() if tied else None,
    )
    return process, f"http://127.0.0.1:{port}/api"


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server from `start_local_server`: SIGTERM (it closes its database), SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_api(url: str, timeout: float = 120, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the Prefect API at `url` answers `/health`; a clear error after `timeout` seconds, or
    as soon as the server `process` (when given) has exited."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the Prefect server for {url} exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Prefect API at {url} (PREFECT_API_URL) did not answer {url}/health within "
                    f"{timeout:.0f} s: start it (`prefect server start`) or unset PREFECT_API_URL"
                )
            time.sleep(0.1)


def ensure_prefect_api(startup_timeout: int = 120) -> str:
    """Make sure this process talks to a Prefect API that answers; returns its URL.

    With `PREFECT_API_URL` set (`prefect server start`, Prefect Cloud, or the server `affectflow repro`
    starts for a whole `dvc repro`) it waits until that API answers. Otherwise it starts a temporary
    local server for this process, which lives until the process exits, so Prefect's event clients can
    flush before it stops (atexit runs Prefect's shutdown hooks, registered later, first).
    """
    url = get_current_settings().api.url
    if url:
        os.environ["PREFECT_API_URL"] = url  # settings made in-process (a test harness) reach subprocesses
        wait_for_api(url, startup_timeout)
        return url
    print(
        "prefect: starting a temporary server for this stage (start one for the whole pipeline with "
        "`affectflow repro`, or set PREFECT_API_URL)"
    )
    process, url = start_local_server()
    atexit.register(stop_server, process)
    wait_for_api(url, startup_timeout, process)
    os.environ["PREFECT_API_URL"] = url
    # Prefect reads the environment once, at import. Without the refresh, the first client made here
    # (the flow's) would start a second temporary server of Prefect's own.
    refresh_global_settings_context()
    return url


def run_with_server(command: Sequence[str]) -> int:
    """Run `command` (`dvc repro ...`) with one local Prefect server for all of its stages; its exit code.

    The server starts in the background while the first stages run (they do not need it) and stops when
    the command ends; the stages that fan out find it through `PREFECT_API_URL` and start none of their
    own. Both the server and the command die with this process, even when it is SIGKILLed. With
    `PREFECT_API_URL` already set, that server is used and nothing is started.
    """
    if get_current_settings().api.url:
        return subprocess.call(list(command))
    server, url = start_local_server()
    try:
        child = subprocess.Popen(
            list(command), env={**os.environ, "PREFECT_API_URL": url}, preexec_fn=parent_death_preexec()
        )
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the command too (same process group): let it finish
            return child.wait()
    finally:
        stop_server(server)


# A lost connection or a timed-out read (a network file system, a cluster worker) is worth another try;
# any other error is a bug or bad input, which a retry would only repeat.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
JOB_RETRIES = 2


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry a failed job only for a `TRANSIENT_ERRORS` exception."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(error, TRANSIENT_ERRORS)


@task(name="job", retries=JOB_RETRIES, retry_delay_seconds=1, retry_condition_fn=is_transient)
def run_job(function: str, kwargs: dict[str, Any]) -> Any:
    """One independent job: `function` is a `module:attribute` path so that worker processes (the job
    processes, Dask workers) can import it. Run in a job process when the stage has them, else here."""
    executor = _job_executor
    return executor(function, kwargs) if executor is not None else _call(function, kwargs)


def _call(function: str, kwargs: dict[str, Any]) -> Any:
    return resolve(function)(**kwargs)


@flow(name="fan-out", log_prints=True)
def _fan_out_flow(function: str, jobs: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[Any]:
    pairs = zip(labels, jobs, strict=True)
    futures = [run_job.with_options(name=label).submit(function, job) for label, job in pairs]
    return [future.result() for future in futures]


def fan_out(
    function: str,
    jobs: Sequence[dict[str, Any]],
    *,
    name: str,
    labels: Sequence[str] | None = None,
    workers: int | None = None,
    gpu: bool = False,
) -> list[Any]:
    """Run `function(**job)` for every job as Prefect tasks; results in job order.

    Args:
        function: `module:attribute` of a top-level function (picklable by name).
        jobs: keyword arguments per job; keep them small (paths, not arrays).
        name: flow-run name shown in Prefect.
        labels: task-run names, one per job (default: job index).
        workers: concurrency; default `AFFECTFLOW_WORKERS` or the core count, never more than the jobs.
        gpu: GPU-bound jobs: with GPUs (`gpu_slots`), one worker process per GPU, each pinned to its
            own (at most `workers` of them when given); without, CPU workers as above.
    """
    if not jobs:
        return []
    labels = list(labels) if labels is not None else [f"job-{i}" for i in range(len(jobs))]
    kind = os.environ.get("AFFECTFLOW_TASK_RUNNER", "process")
    if kind.startswith(WORK_POOL):
        return _fan_out_to_work_pool(kind.removeprefix(WORK_POOL), function, jobs, name, labels, workers)
    slots = gpu_slots() if gpu else []
    if slots:
        slots = slots[: workers or len(slots)]
        workers = len(slots)
    workers = max(1, min(workers or num_workers(), len(jobs)))
    runner = make_task_runner(workers, slots[:workers])
    # a SIGKILLed `dvc repro` takes the workers with it
    with exit_with_parent(), _environment_kept(), job_processes(workers, slots[:workers], function):
        ensure_prefect_api()  # while the job processes start
        return _fan_out_flow.with_options(name=name, task_runner=runner)(function, list(jobs), labels)


WORK_POOL = "workpool:"
WORK_POOL_IN_FLIGHT = 64  # runs waited on at once (the pool's workers bound how many run)


def _fan_out_to_work_pool(
    pool: str,
    function: str,
    jobs: Sequence[dict[str, Any]],
    name: str,
    labels: list[str],
    workers: int | None,
) -> list[Any]:
    """`fan_out` on the Prefect work pool `pool` (`pipeline.workpool`): each job a flow run of its own,
    taken by whichever `affectflow worker` of the pool is free, each awaited by a task of this flow."""
    from prefect.context import TaskRunContext

    from pipeline import workpool

    if not get_current_settings().api.url:
        raise ValueError(
            f"AFFECTFLOW_TASK_RUNNER={WORK_POOL}{pool} needs PREFECT_API_URL: the server that the pool's "
            "workers (`affectflow worker --pool ...`) take their runs from"
        )
    ensure_prefect_api()
    deployment = workpool.ensure_deployment(pool)

    def on_work_pool(function: str, kwargs: dict[str, Any]) -> Any:
        label = TaskRunContext.get().task.name
        return workpool.run_on_work_pool(deployment, function, kwargs, label, retries=JOB_RETRIES)

    in_flight = max(1, min(workers or WORK_POOL_IN_FLIGHT, len(jobs)))
    runner = ThreadPoolTaskRunner(max_workers=in_flight)
    with _jobs_run_by(on_work_pool):
        return _fan_out_flow.with_options(name=name, task_runner=runner)(function, list(jobs), labels)


@contextmanager
def _environment_kept() -> Iterator[None]:
    """Give the process its environment back afterwards: Dask's nannies write their workers' settings
    (`MALLOC_TRIM_THRESHOLD_`, `OMP_NUM_THREADS=1`, ...) into the parent's `os.environ` before spawning
    them, where they would reach every later subprocess of the stage."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)
