"""Stage smooth: per run, seed and task, the smoothing candidate that scores best on the run's tune tracks,
applied to its tune and test predictions (never chosen on the test tracks).

Reads <models>/<run>/predictions.parquet; writes <out>/<run>.parquet (same columns, smoothed) and
<out>/<run>.json (seed -> task -> chosen spec and every candidate's tune score).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pipeline  # noqa: F401
from pipeline.config import load_config
from pipeline.evaluation.report import smooth_runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    smooth_runs(args.models, args.frames, args.out, load_config(args.params))


if __name__ == "__main__":
    main()
