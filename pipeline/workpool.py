"""Fan-out jobs on a Prefect work pool: `prefect worker` processes on other machines run them.

`AFFECTFLOW_TASK_RUNNER=workpool:<pool>` makes `pipeline.flows.fan_out` send each job as a flow run of the
deployment `affectflow-job/<pool>` (made on first use) to the work pool `<pool>` of the Prefect server at
`PREFECT_API_URL`, and wait for them. On each machine, `affectflow worker --pool <pool>` (one per GPU, each
with its own `CUDA_VISIBLE_DEVICES`) takes runs from the pool and runs them in a fresh process, in the
checkout it was started from. Every machine needs the checkout and the data at the same path (a shared
file system): the jobs read and write the stage's folders, and their results go to
`<checkout>/.prefect/storage`.

A machine that dies takes its runs with it. Every run sends Prefect a heartbeat (`HEARTBEAT_SECONDS`); an
automation on the server (made with the deployment) marks a run whose heartbeats stop as Crashed, and the
stage then runs that job again (`JOB_RETRIES` times at most) on whichever worker is free.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import cloudpickle
from prefect import flow

HEARTBEAT_SECONDS = 30  # Prefect's shortest flow-run heartbeat interval
CRASHED_AFTER = timedelta(seconds=60)  # no heartbeat for this long: the run's machine or worker is gone
POLL_SECONDS = 1.0
JOB_FLOW = "affectflow-job"
ENTRYPOINT = "pipeline/workpool.py:job_flow"
REPO = Path(__file__).resolve().parent.parent


@flow(name=JOB_FLOW, persist_result=True, log_prints=True)
def job_flow(function: str, payload: str) -> Any:
    """One fan-out job on a work-pool worker: `function(**kwargs)`, kwargs pickled into `payload` (they may
    hold dataclasses and paths, which Prefect's JSON parameters would not give back as such)."""
    from pipeline.flows import _call

    return _call(function, cloudpickle.loads(base64.b64decode(payload)))


def pack(kwargs: dict[str, Any]) -> str:
    return base64.b64encode(cloudpickle.dumps(kwargs)).decode("ascii")


def ensure_deployment(pool: str) -> str:
    """The deployment of `job_flow` on work pool `pool` (made or updated), and the crash automation for its
    runs; returns the deployment's name for `run_deployment`."""
    from prefect.client.orchestration import get_client

    ensure_work_pool(pool)
    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(  # an upsert: same flow and name, same deployment
            flow_id=client.create_flow_from_name(JOB_FLOW),
            name=pool,
            work_pool_name=pool,
            entrypoint=ENTRYPOINT,
            path=str(REPO),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
            parameter_openapi_schema={"type": "object", "properties": {}},
            enforce_parameter_schema=False,
        )
    ensure_crash_automation(str(deployment_id))
    return f"{JOB_FLOW}/{pool}"


def ensure_work_pool(pool: str) -> None:
    """Make the process work pool `pool` unless it exists (one at a time: workers that each make it at
    start-up race for a SQLite server's lock)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def ensure_crash_automation(deployment_id: str) -> None:
    """An automation that marks a run of this deployment Crashed once its heartbeats stop (Prefect's own
    zombie-run detection: https://docs.prefect.io/v3/advanced/detect-zombie-flows)."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    name = f"affectflow: crash runs of deployment {deployment_id} without heartbeats"
    try:
        Automation.read(name=name)
        return
    except ValueError:  # none of that name yet
        pass
    ends = ("Completed", "Failed", "Cancelled", "Crashed")
    Automation(
        name=name,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{end}" for end in ends)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=CRASHED_AFTER,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message="no heartbeat: its worker is gone")],
    ).create()


def run_on_work_pool(deployment: str, function: str, kwargs: dict[str, Any], label: str, retries: int) -> Any:
    """Run one job as a flow run of `deployment` and wait for it; its result, or its exception raised here.

    A run that crashed (its worker or machine died) is run again, `retries` times at most.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    parameters = {"function": function, "payload": pack(kwargs)}
    for attempt in range(1 + retries):
        name = label if attempt == 0 else f"{label}-rerun-{attempt}"
        run = run_deployment(deployment, parameters=parameters, flow_run_name=name, timeout=0)
        with get_client(sync_client=True) as client:
            while not (state := client.read_flow_run(run.id).state) or not state.is_final():
                time.sleep(POLL_SECONDS)
        if state.is_crashed() and attempt < retries:
            print(f"{label}: run '{name}' crashed ({state.message}); running the job again")
            continue
        if state.is_crashed():
            raise RuntimeError(f"{label}: run '{name}' crashed ({state.message}), {retries} reruns spent")
        return state.result()  # raises the job's own exception when it failed


def worker_command(pool: str, name: str | None, limit: int) -> list[str]:
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    command += ["--limit", str(limit)] + (["--name", name] if name else [])
    return command


def start_worker(pool: str, name: str | None = None, limit: int = 1, **popen: Any) -> subprocess.Popen[bytes]:
    """`prefect worker start` for `pool`, run from the checkout with this project's Prefect settings, its
    runs sending heartbeats every HEARTBEAT_SECONDS (the crash automation relies on them)."""
    env = {**os.environ, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS), **popen.pop("env", {})}
    return subprocess.Popen(worker_command(pool, name, limit), cwd=REPO, env=env, **popen)
