"""The official metrics by name, and scoring of one task's decided predictions.

A task names its metric (`Task.metric`); two tasks of one kind may be scored differently (VA by mean
CCC, mimicry intensity by mean Pearson r). Every function below is checked against scikit-learn / scipy
in tests/evaluation/test_metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.evaluation import metrics
from pipeline.tasks.definitions import Task
from pipeline.tasks.kinds import behaviour


@dataclass(frozen=True)
class Metric:
    """An official metric: `score(predicted [N(, C)], targets [N(, C)], num_outputs)` on valid rows.

    It returns a dict whose `headline` key is the track score; a `per_dim` list, when present, is reported
    per output name (e.g. `ccc_valence`).
    """

    name: str
    headline: str
    score: Callable[[np.ndarray, np.ndarray, int], dict]


METRICS: dict[str, Metric] = {
    "macro_f1": Metric("macro_f1", "f1", lambda p, t, k: metrics.expr_f1(p, t, k)),
    "mean_binary_f1": Metric("mean_binary_f1", "f1", lambda p, t, k: metrics.au_f1(p, t)),
    "mean_ccc": Metric("mean_ccc", "ccc", lambda p, t, k: metrics.mean_ccc(p, t)),
    "mean_pearson": Metric("mean_pearson", "r", lambda p, t, k: metrics.mean_pearson(p, t)),
}


def headline(task: Task) -> str:
    """Key of the track score in metrics files: f1, ccc or r."""
    return METRICS[task.metric].headline


def score(task: Task, predicted: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The official score of valid rows (predicted: decided outputs, as `TaskKind.decide` gives).

    Returns:
        {headline: score} plus `<headline>_<output name>` per dimension for per-dimension metrics.
    """
    if task.metric not in METRICS:
        raise KeyError(f"task '{task.name}': unknown metric '{task.metric}' (known: {', '.join(METRICS)})")
    result = METRICS[task.metric].score(predicted, targets, task.num_outputs)
    key = headline(task)
    scores = {key: float(result[key])}
    for name, value in zip(task.class_names, result.get("per_dim", []), strict=False):
        scores[f"{key}_{name}"] = float(value)
    return scores


def monitor_scores(
    tasks: list[Task], probabilities: dict[str, np.ndarray], targets: dict[str, np.ndarray]
) -> dict[str, float]:
    """Untuned validation scores for watching training (AU threshold 0.5, no smoothing).

    Args:
        probabilities: task -> [N, C] probabilities or values; targets: task -> [N] or [N, C].

    Returns:
        {"<task>_<headline>": score}; a task without a labelled row is left out (no NaN).
    """
    scores = {}
    for task in tasks:
        true = np.asarray(targets[task.name])
        valid = task.valid_mask(true)
        if valid.sum() < 2:
            continue
        predicted = behaviour(task).decide(np.asarray(probabilities[task.name])[valid], {})
        scores[f"{task.name}_{headline(task)}"] = score(task, predicted, true[valid])[headline(task)]
    return scores
