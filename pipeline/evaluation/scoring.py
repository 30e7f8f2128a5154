"""Score cross-validation predictions with the official metrics, against trivial baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.evaluation import metrics
from pipeline.features.sequences import outputs_of
from pipeline.tasks.definitions import Task


def attach_labels(predictions: pl.DataFrame, labels_dir: Path) -> pl.DataFrame:
    """Join each prediction row with its frame's labels (same decoded-frame index)."""
    tracks = predictions["track"].unique().to_list()
    labels = pl.concat(
        [pl.read_parquet(labels_dir / f"{t}.parquet").with_columns(pl.lit(t).alias("track")) for t in tracks]
    )
    joined = predictions.join(labels, on=["track", "frame"], how="left", validate="m:1")
    if joined.height != predictions.height:
        raise ValueError("predictions and labels do not align on (track, frame)")
    return joined


def decide(task: Task, outputs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Turn model outputs into challenge predictions: class index, 0/1 per AU, or clipped values."""
    if task.kind == "multiclass":
        return outputs.argmax(axis=1)
    if task.kind == "multilabel":
        return (outputs >= thresholds).astype(np.int64)
    return np.clip(outputs, -1.0, 1.0)


def targets_of(table: pl.DataFrame, task: Task) -> np.ndarray:
    values = table.select(task.columns).to_numpy()
    return values[:, 0].astype(np.int64) if task.kind == "multiclass" else values


def score(task: Task, predicted: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The official score of one task, with its headline key first."""
    if task.kind == "multiclass":
        return {"f1": metrics.expr_f1(predicted, targets, num_classes=task.num_outputs)["f1"]}
    if task.kind == "multilabel":
        return {"f1": metrics.au_f1(predicted, targets)["f1"]}
    va = metrics.va_score(predicted, targets)
    return {"ccc": va["mean"], "ccc_valence": va["valence"], "ccc_arousal": va["arousal"]}


def baseline(task: Task, train_targets: np.ndarray, test_targets: np.ndarray) -> float:
    """The trivial baseline of the issue: EXPR best of majority/uniform, AU all-positive, VA CCC 0."""
    if task.kind == "multiclass":
        return metrics.expr_baselines(train_targets, test_targets)["best"]
    if task.kind == "multilabel":
        return metrics.au_all_positive_f1(test_targets)
    return metrics.va_constant_ccc()


def evaluate_fold(
    test: pl.DataFrame, reference: pl.DataFrame, tasks: list[Task]
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Scores of one fold and its rows with challenge predictions.

    Args:
        test: the fold's held-out predictions joined with labels.
        reference: the other folds' held-out predictions joined with labels: out-of-fold outputs on this
            fold's training tracks. AU thresholds are tuned and the majority class is taken there, so no
            label of the reported fold leaks in, and the thresholds see outputs as uncertain as those they
            are applied to (a model's outputs on its own training tracks are over-confident).

    Returns:
        scores: task -> {headline metric, ..., "baseline", "n_frames"}.
        decided: the test rows with `<task>_pred` columns (list columns for multi-output tasks).
    """
    scores: dict[str, Any] = {}
    decided = test.select("track", "frame")
    for task in tasks:
        reference_targets = targets_of(reference, task)
        reference_valid = task.valid_mask(reference_targets)
        test_targets = targets_of(test, task)
        test_valid = task.valid_mask(test_targets)
        if not test_valid.any():
            continue
        thresholds = None
        if task.kind == "multilabel":
            thresholds = metrics.tune_au_thresholds(
                outputs_of(reference, task)[reference_valid], reference_targets[reference_valid]
            )
        predicted = decide(task, outputs_of(test, task), thresholds)
        scores[task.name] = {
            **score(task, predicted[test_valid], test_targets[test_valid]),
            "baseline": baseline(task, reference_targets[reference_valid], test_targets[test_valid]),
            "n_frames": int(test_valid.sum()),
        }
        decided = decided.with_columns(pl.Series(f"{task.name}_pred", predicted.tolist()))
    return scores, decided


def summarise(fold_scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of every per-fold number."""
    summary: dict[str, Any] = {}
    tasks = sorted({task for scores in fold_scores for task in scores})
    for task in tasks:
        keys = [k for k in fold_scores[0].get(task, {}) if k != "n_frames"]
        summary[task] = {}
        for key in keys:
            values = np.array([scores[task][key] for scores in fold_scores if task in scores])
            summary[task][key] = round(float(values.mean()), 4)
            summary[task][f"{key}_std"] = round(float(values.std()), 4)
    return summary
