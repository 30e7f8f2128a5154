"""Prefect's cost per stage: the same jobs on a plain spawned process pool and through `fan_out`.

Usage: python -m bench.bench_prefect [--jobs 4] [--seconds 2] [--repeats 3]

Each measurement is a fresh process, as a DVC stage is, so imports and worker start-up are included, and the
three ways are run side by side, interleaved, `--repeats` times:
- plain: `concurrent.futures.ProcessPoolExecutor` (spawn, the same worker set-up as `fan_out`'s);
- fan_out, server running: `PREFECT_API_URL` points at a server started before (as under `affectflow repro`,
  or a `prefect server start` of your own);
- fan_out, temporary server: nothing configured, so the stage starts (and stops) its own server.
Prints the median wall time of each and Prefect's cost per stage (fan_out minus plain).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pipeline  # noqa: F401
from pipeline.flows import _job_initializer, fan_out, start_local_server, stop_server, wait_for_api

MODES = ("plain", "fan_out, server running", "fan_out, temporary server")


def busy(seconds: float) -> float:
    """A CPU-bound job of fixed length."""
    end, x = time.perf_counter() + seconds, 0.0
    while time.perf_counter() < end:
        x += 1.0
    return seconds


def run_stage(mode: str, jobs: int, seconds: float, workers: int) -> None:
    """One stage's worth of jobs in this (fresh) process; prints its wall time from the start of the process
    (`BENCH_START`, set by the parent just before starting it)."""
    kwargs = [{"seconds": seconds}] * jobs
    if mode == "plain":
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_job_initializer,
            initargs=(threads, os.getpid(), (), "", "bench.bench_prefect:busy"),
        ) as pool:
            list(pool.map(busy, [seconds] * jobs))
    else:
        fan_out("bench.bench_prefect:busy", kwargs, name="bench", workers=workers)
    print(f"wall {time.time() - float(os.environ['BENCH_START']):.3f}")


def measure(mode: str, args: argparse.Namespace, server_url: str) -> float:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    if mode == "fan_out, server running":
        env["PREFECT_API_URL"] = server_url
    command = [sys.executable, "-m", "bench.bench_prefect", "--stage", mode]
    command += ["--jobs", str(args.jobs), "--seconds", str(args.seconds), "--workers", str(args.workers)]
    env["BENCH_START"] = str(time.time())
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return float(next(line for line in output.splitlines() if line.startswith("wall "))[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one job")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stage", choices=MODES, help=argparse.SUPPRESS)  # one measurement (internal)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.jobs, args.seconds, args.workers)
        return

    server, url = start_local_server()
    try:
        wait_for_api(url, process=server)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                times[mode].append(measure(mode, args, url))
    finally:
        stop_server(server)

    ideal = args.jobs / args.workers * args.seconds
    print(f"{args.jobs} jobs x {args.seconds:.1f} s on {args.workers} workers ({os.cpu_count()} cores), ")
    print(f"each a fresh process, median of {args.repeats} (all runs in s):")
    plain = statistics.median(times["plain"])
    for mode in MODES:
        median = statistics.median(times[mode])
        runs = ", ".join(f"{t:.1f}" for t in times[mode])
        cost = f"   Prefect's cost {median - plain:+.1f} s, ratio {median / plain:.2f}"
        cost = "" if mode == "plain" else cost
        print(f"  {mode:<27} {median:5.1f} s  ({runs}){cost}")
    print(f"  (the jobs alone: {ideal:.1f} s)")


if __name__ == "__main__":
    main()
