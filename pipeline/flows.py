"""Prefect flows that schedule the heavy jobs inside DVC stages.

DVC owns the DAG: a stage calls `fan_out` for its independent jobs (video shards, folds) and Prefect
runs them with bounded concurrency. Nothing here re-encodes the pipeline's stage order.

Where the jobs run is a run-time setting, not a param (it does not change results):
- `AFFECTFLOW_TASK_RUNNER=process` (default): a local process pool (`spawn`, safe after CUDA init);
- `thread`: a thread pool (for jobs that release the GIL);
- `module:attr`: any Prefect TaskRunner factory, e.g. `prefect_dask:DaskTaskRunner` for a Dask cluster.
`AFFECTFLOW_WORKERS` bounds concurrency (per-GPU: set it to the number of GPUs).

Without a configured `PREFECT_API_URL`, `fan_out` starts one temporary local server for the stage and
hands its address to the worker processes (left alone, every spawned worker would start its own:
10-20 s each here). With `PREFECT_API_URL` set (`prefect server start`, Prefect Cloud), runs are
recorded there and nothing is started.
"""

from __future__ import annotations

import atexit
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow, task
from prefect.settings import get_current_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pipeline.runtime import num_workers


def resolve(path: str) -> Callable[..., Any]:
    """Import `package.module:attribute`."""
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"expected 'module:attribute', got '{path}'")
    return getattr(importlib.import_module(module_name), attribute)


def _job_initializer(threads: int) -> None:
    # Each worker gets an equal share of the cores instead of every process claiming all of them.
    import torch

    import pipeline  # noqa: F401  (installs the torchvision shim in the fresh process)

    torch.set_num_threads(threads)


def make_task_runner(workers: int) -> TaskRunner:
    kind = os.environ.get("AFFECTFLOW_TASK_RUNNER", "process")
    if kind == "process":
        threads = max(1, (os.cpu_count() or 1) // workers)
        return ProcessPoolTaskRunner(max_workers=workers, initializer=_job_initializer, initargs=(threads,))
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    return resolve(kind)()


def ensure_prefect_api(startup_timeout: int = 120) -> str:
    """Make sure this process and the workers it spawns talk to one Prefect API; returns its URL.

    A temporary server started here lives until the process exits, so Prefect's event clients can
    flush before it stops (atexit runs Prefect's shutdown hooks, registered later, first).
    """
    url = get_current_settings().api.url
    if url:
        os.environ["PREFECT_API_URL"] = url  # settings made in-process (a test harness) don't reach workers
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=startup_timeout)
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by spawned workers and read by this process
    return server.api_url


@task(name="job")
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
) -> list[Any]:
    """Run `function(**job)` for every job as Prefect tasks; results in job order.

    Args:
        function: `module:attribute` of a top-level function (picklable by name).
        jobs: keyword arguments per job; keep them small (paths, not arrays).
        name: flow-run name shown in Prefect.
        labels: task-run names, one per job (default: job index).
        workers: concurrency; default `AFFECTFLOW_WORKERS` or the core count, never more than the jobs.
    """
    if not jobs:
        return []
    workers = max(1, min(workers or num_workers(), len(jobs)))
    labels = list(labels) if labels is not None else [f"job-{i}" for i in range(len(jobs))]
    ensure_prefect_api()
    runner = make_task_runner(workers)
    return _fan_out_flow.with_options(name=name, task_runner=runner)(function, list(jobs), labels)
