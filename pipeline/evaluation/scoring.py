"""Score one run's predictions: decisions tuned on its tune tracks, official metrics on its test tracks,
against trivial baselines; summaries over folds and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import artifacts
from pipeline.features.sequences import output_columns, outputs_of, targets_of
from pipeline.tasks.definitions import Task
from pipeline.tasks.kinds import behaviour
from pipeline.tasks.scores import score


def read_predictions(path: Path, tasks: list[Task]) -> pl.DataFrame:
    """Read a predictions table and check it: the task columns exist and every value is finite.

    Raises:
        ValueError: naming the file, the column, and the first bad track and frame.
    """
    table = pl.read_parquet(path)
    for task in tasks:
        for column in output_columns(task):
            if column not in table.columns:
                raise ValueError(f"{path}: no column '{column}' for task {task.name} (has {table.columns})")
            bad = table.filter(~pl.col(column).is_finite() | pl.col(column).is_null())
            if bad.height:
                row = bad.row(0, named=True)
                raise ValueError(
                    f"{path}: {column} is not finite for track {row['track']} frame {row['frame']} "
                    f"({bad.height} rows)"
                )
    return table


def attach_labels(predictions: pl.DataFrame, frames_dir: Path) -> pl.DataFrame:
    """Join each prediction row with its frame's labels (same decoded-frame index)."""
    tracks = predictions["track"].unique().sort().to_list()
    labels = pl.concat(
        [
            pl.read_parquet(artifacts.labels_table(frames_dir, t)).with_columns(pl.lit(t).alias("track"))
            for t in tracks
        ],
        how="diagonal",
    )
    joined = predictions.join(labels, on=["track", "frame"], how="left", validate="m:1")
    if joined.height != predictions.height:
        raise ValueError("predictions and labels do not align on (track, frame)")
    return joined


def task_rows(table: pl.DataFrame, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(outputs [N, C], targets) of the labelled rows of one task; a video-level task gives one row per
    track (its outputs are the same on every frame)."""
    if any(column not in table.columns for column in task.columns):
        return np.zeros((0, task.num_outputs)), behaviour(task).empty_targets(
            0, task.num_outputs, task.invalid
        )
    if task.level == "video":
        table = table.sort("track", "frame").unique("track", keep="first", maintain_order=True)
    outputs, targets = outputs_of(table, task), targets_of(table, task)
    valid = task.valid_mask(targets)
    return outputs[valid], targets[valid]


def score_run(
    test: pl.DataFrame, tune: pl.DataFrame, train_targets: dict[str, np.ndarray], tasks: list[Task]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], pl.DataFrame]:
    """Scores of one run and seed.

    Args:
        test: the run's test predictions joined with labels (scored only).
        tune: its tune predictions joined with labels: decisions (AU thresholds) are tuned here.
        train_targets: task -> valid targets of the run's training tracks (for the majority baseline).

    Returns:
        scores: task -> {headline, per-dimension values, "baseline", "n_rows"} (tasks with labelled test
            rows only); decisions: task -> tuned knobs; decided: the test rows with `<task>_pred` columns.
    """
    scores: dict[str, Any] = {}
    decisions: dict[str, dict[str, Any]] = {}
    decided = test.select("track", "frame")
    for task in tasks:
        kind = behaviour(task)
        tune_outputs, tune_targets = task_rows(tune, task)
        knobs = kind.tune(tune_outputs, tune_targets)
        decisions[task.name] = knobs
        test_outputs, test_targets = task_rows(test, task)
        if len(test_targets) == 0:
            continue
        scores[task.name] = score(task, kind.decide(test_outputs, knobs), test_targets) | {
            "baseline": kind.baseline(
                train_targets.get(task.name, tune_targets), test_targets, task.num_outputs
            ),
            "n_rows": len(test_targets),
        }
        predicted = kind.decide(outputs_of(test, task), knobs)
        decided = decided.with_columns(pl.Series(f"{task.name}_pred", predicted.tolist()))
    return scores, decisions, decided


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value), rounded to 4 decimals."""
    array = np.asarray(values, dtype=np.float64)
    sd = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return round(float(array.mean()), 4), round(sd, 4)
