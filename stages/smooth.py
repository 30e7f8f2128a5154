"""Stage smooth: per run, seed and task, the smoothing candidate that scores best on the run's tune tracks,
applied to its tune and test predictions (never chosen on the test tracks).

Reads <models>/<run>/predictions.parquet; writes <out>/<run>.parquet (same columns, smoothed) and
<out>/<run>.json (seed -> task -> chosen spec and every candidate's tune score).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.evaluation.report import choose_smoothing
from pipeline.evaluation.scoring import attach_labels
from pipeline.tasks.definitions import get_tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    config = load_config(args.params)
    tasks = get_tasks(config.train.tasks)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for run in config.folds.runs:
        raw = pl.read_parquet(artifacts.raw_predictions(args.models / run))
        columns = raw.columns
        labelled = attach_labels(raw, args.frames)
        tables, choices = [], {}
        for seed in sorted(raw["seed"].unique().to_list()):
            smoothed, choice = choose_smoothing(labelled.filter(pl.col("seed") == seed), tasks, config.smooth)
            tables.append(smoothed.select(columns))
            choices[str(seed)] = choice
        pl.concat(tables).sort("seed", "role", "track", "frame").write_parquet(
            artifacts.smoothed_predictions(args.out, run)
        )
        artifacts.smoothing_choice(args.out, run).write_text(json.dumps(choices, indent=1) + "\n")
        chosen = {
            task: [c[task]["chosen"] for c in choices.values()] for task in choices[next(iter(choices))]
        }
        print(f"smooth {run}: {chosen}")


if __name__ == "__main__":
    main()
