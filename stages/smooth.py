"""Stage smooth: temporal smoothing of every fold's per-frame predictions, per track and per task.

Reads <models>/fold_<k>/predictions.parquet, writes <out>/fold_<k>.parquet with the same columns.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline.config import load_params
from pipeline.features.sequences import output_columns, outputs_of
from pipeline.evaluation.smoothing import smooth
from pipeline.tasks.definitions import get_task


def smooth_predictions(table: pl.DataFrame, specs: dict[str, dict]) -> pl.DataFrame:
    """Smooth each task's columns along time within each track (frames must be consecutive per track)."""
    parts = []
    for track_table in table.sort("track", "frame").partition_by("track", maintain_order=True):
        updates = {}
        for task_name, spec in specs.items():
            task = get_task(task_name)
            if output_columns(task)[0] not in track_table.columns:
                continue
            values = smooth(outputs_of(track_table, task), spec)
            updates.update({name: values[:, i] for i, name in enumerate(output_columns(task))})
        parts.append(
            track_table.with_columns(**{k: pl.Series(v, dtype=pl.Float32) for k, v in updates.items()})
        )
    return pl.concat(parts)


def run(models_dir: Path, out_dir: Path, params: dict) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for fold_dir in sorted(models_dir.glob("fold_*")):
        table = pl.read_parquet(fold_dir / "predictions.parquet")
        smoothed = smooth_predictions(table, params)
        smoothed.write_parquet(out_dir / f"{fold_dir.name}.parquet")
    print(f"smooth: {', '.join(f'{task}={spec}' for task, spec in params.items())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.models, args.out, load_params("smooth", args.params))


if __name__ == "__main__":
    main()
