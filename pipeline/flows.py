"""Prefect flows that schedule the heavy jobs inside DVC stages.

DVC owns the DAG: a stage calls `fan_out` for its independent jobs (video shards, folds) and Prefect
runs them with bounded concurrency. Nothing here re-encodes the pipeline's stage order.

Where the jobs run is a run-time setting, not a param (it does not change results):
- `AFFECTFLOW_TASK_RUNNER=process` (default): a local process pool (`spawn`, safe after CUDA init);
- `thread`: a thread pool (for jobs that release the GIL);
- `dask`: Prefect's Dask task runner, on the cluster at `AFFECTFLOW_DASK_ADDRESS` or else on a local
  `distributed.LocalCluster` of worker processes (`dask_task_runner`);
- `module:attr`: any other Prefect TaskRunner factory.
`AFFECTFLOW_WORKERS` bounds concurrency. GPU-bound jobs (`fan_out(..., gpu=True)`) get one worker
process per GPU (`AFFECTFLOW_GPUS`, default every CUDA device), each pinned to its own GPU.

Without a configured `PREFECT_API_URL`, `fan_out` starts one temporary local server for the stage and
hands its address to the worker processes (left alone, every spawned worker would start its own:
10-20 s each here). With `PREFECT_API_URL` set (`prefect server start`, Prefect Cloud), runs are
recorded there and nothing is started.

Nothing outlives the stage (`pipeline.resume` lifelines, Linux): the temporary server gets SIGKILL from
the kernel when the stage's main thread ends (`PR_SET_PDEATHSIG`), process workers exit once their
parent is gone (they poll it) and never commit a unit after that, and while `fan_out` runs the stage
itself exits, killing its children, when its own parent (`dvc repro`) dies.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import prefect
from prefect import flow, task
from prefect.context import refresh_global_settings_context
from prefect.settings import get_current_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pipeline.resume import exit_with_parent, parent_death_preexec, watch_parent
from pipeline.runtime import num_workers


def resolve(path: str) -> Callable[..., Any]:
    """Import `package.module:attribute`."""
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"expected 'module:attribute', got '{path}'")
    return getattr(importlib.import_module(module_name), attribute)


def gpu_slots() -> list[str]:
    """The GPUs jobs may use, as CUDA device ids: `AFFECTFLOW_GPUS` ("0,1,3"; "" for none), else every
    CUDA device present (none on a CPU machine)."""
    value = os.environ.get("AFFECTFLOW_GPUS")
    if value is not None:
        return [slot.strip() for slot in value.split(",") if slot.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _job_initializer(threads: int, parent: int, slots: Sequence[str] = (), claims: str = "") -> None:
    """Runs first in every process worker; `parent` is the pid of the stage that owns the pool.

    With GPU `slots`, the worker claims the first free one (a file created exclusively in the pool's
    `claims` folder: atomic, so no two workers of a pool take the same GPU) and sees only that GPU
    (`CUDA_VISIBLE_DEVICES`, set before torch touches CUDA): its jobs run on "cuda", which is that GPU.
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
    """The task runner for `workers` concurrent jobs; with GPU `slots`, one GPU per process worker."""
    kind = os.environ.get("AFFECTFLOW_TASK_RUNNER", "process")
    if kind == "process":
        threads = max(1, (os.cpu_count() or 1) // workers)
        claims = tempfile.mkdtemp(prefix="affectflow-gpus-") if slots else ""  # removed with the stage
        if claims:
            atexit.register(shutil.rmtree, claims, True)
        return ProcessPoolTaskRunner(
            max_workers=workers,
            initializer=_job_initializer,
            initargs=(threads, os.getpid(), tuple(slots), claims),
        )
    if slots:
        raise ValueError(
            f"GPU jobs need AFFECTFLOW_TASK_RUNNER=process (one GPU per worker process), not '{kind}'; "
            "on a Dask cluster give each worker one GPU (`dask-cuda-worker`, or CUDA_VISIBLE_DEVICES)"
        )
    if kind == "dask":
        return dask_task_runner(workers)
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    return resolve(kind)()


@functools.cache
def _tied_server_type() -> type:
    """Prefect's temporary server, started so that the kernel kills it when the starting thread ends.

    Prefect's own `SubprocessASGIServer` stops its server from `atexit`, which a SIGKILLed stage never
    runs: the server would live on. The command below is Prefect 3.8.8's `_run_uvicorn_command`
    unchanged, plus the `preexec_fn`. Built on first use: the server module costs ~1 s to import, which
    workers (they import this module) should not pay.
    """
    from prefect.server.api.server import SubprocessASGIServer

    class TiedASGIServer(SubprocessASGIServer):
        _instances: dict[int | None, SubprocessASGIServer] = {}  # not shared with Prefect's own servers

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            server_env = {
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
            # PDEATHSIG follows the forking *thread*: only the main thread lives as long as the process.
            tied = threading.current_thread() is threading.main_thread()
            return subprocess.Popen(
                args=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={
                    **os.environ,
                    **server_env,
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
                preexec_fn=parent_death_preexec() if tied else None,
            )

    return TiedASGIServer


def ensure_prefect_api(startup_timeout: int = 120) -> str:
    """Make sure this process and the workers it spawns talk to one Prefect API; returns its URL.

    A temporary server started here lives until the process exits, so Prefect's event clients can
    flush before it stops (atexit runs Prefect's shutdown hooks, registered later, first). Started from
    the main thread, it dies with the process even when that is SIGKILLed.
    """
    url = get_current_settings().api.url
    if url:
        os.environ["PREFECT_API_URL"] = url  # settings made in-process (a test harness) don't reach workers
        return url
    server = _tied_server_type()()
    server.start(timeout=startup_timeout)
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by spawned workers
    # ... and read by this process: Prefect reads the environment once, at import. Without the refresh,
    # the first client made here (the flow's) starts a second temporary server of Prefect's own.
    refresh_global_settings_context()
    return server.api_url


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
    """One independent job: `function` is a `module:attribute` path so process workers can import it."""
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
    slots = gpu_slots() if gpu else []
    if slots:
        slots = slots[: workers or len(slots)]
        workers = len(slots)
    workers = max(1, min(workers or num_workers(), len(jobs)))
    labels = list(labels) if labels is not None else [f"job-{i}" for i in range(len(jobs))]
    ensure_prefect_api()
    runner = make_task_runner(workers, slots[:workers])
    with exit_with_parent(), _environment_kept():  # a SIGKILLed `dvc repro` takes the workers with it
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
