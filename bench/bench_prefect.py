"""Prefect's cost inside a stage: the same jobs run in a plain loop and through `pipeline.flows.fan_out`.

Usage: python -m bench.bench_prefect [--jobs 4]
Prints the wall time of each and the overhead; run it in a fresh process so the temporary server's
start-up (paid once per stage process when no PREFECT_API_URL is set) is included.
"""

from __future__ import annotations

import argparse
import time

import pipeline  # noqa: F401
from pipeline.flows import fan_out


def busy(seconds: float) -> float:
    """A CPU-bound job of fixed length."""
    end, x = time.perf_counter() + seconds, 0.0
    while time.perf_counter() < end:
        x += 1.0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one job")
    args = parser.parse_args()

    start = time.perf_counter()
    for _ in range(args.jobs):
        busy(args.seconds)
    loop = time.perf_counter() - start

    start = time.perf_counter()
    fan_out("bench.bench_prefect:busy", [{"seconds": args.seconds}] * args.jobs, name="bench", workers=2)
    first = time.perf_counter() - start

    start = time.perf_counter()
    fan_out("bench.bench_prefect:busy", [{"seconds": args.seconds}] * args.jobs, name="bench", workers=2)
    second = time.perf_counter() - start

    print(f"{args.jobs} jobs x {args.seconds:.1f} s: plain loop {loop:.1f} s")
    print(f"fan_out, 2 workers, first flow in this process (server start included): {first:.1f} s")
    print(f"fan_out, 2 workers, second flow in the same process: {second:.1f} s")
    print(f"ratio first/loop {first / loop:.2f}, second/loop {second / loop:.2f}")


if __name__ == "__main__":
    main()
