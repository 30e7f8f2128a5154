"""Stage evaluate: per run and seed, decisions (AU thresholds) tuned on the tune tracks and official scores
on the test tracks, smoothed and unsmoothed, against trivial baselines; summaries over folds and seeds.

Outputs: metrics/cv.json (k-fold CV), metrics/official.json (Train_Set -> Validation_Set),
metrics/runs/<run>.json (every seed's scores, decisions and smoothing), plots/, and
<decisions>/<run>.json (the tuned decision knobs a later `predict` applies).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pipeline  # noqa: F401
from pipeline.config import load_config
from pipeline.evaluation.evaluate import evaluate_runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--smoothed", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    parser.add_argument("--decisions", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    evaluate_runs(
        args.models,
        args.smoothed,
        args.frames,
        args.splits,
        args.metrics,
        args.plots,
        args.decisions,
        load_config(args.params),
    )


if __name__ == "__main__":
    main()
