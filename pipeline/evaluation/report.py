"""From raw run predictions to the reported numbers: smoothing chosen on tune tracks, decisions tuned on
tune tracks, official scores on test tracks, summaries over folds and seeds.

Nothing here looks at a run's test labels before its scores are computed: every choice (smoothing per
task, AU thresholds) is made on the run's tune rows, inside its training folds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import artifacts
from pipeline.config import Config, SmoothConfig
from pipeline.evaluation.scoring import attach_labels, mean_and_sd, read_predictions, score_run, task_rows
from pipeline.evaluation.smoothing import smooth_table
from pipeline.features.sequences import present_tasks
from pipeline.tasks.definitions import Task
from pipeline.tasks.kinds import behaviour
from pipeline.tasks.scores import headline, score


def tuned_score(task: Task, tune: pl.DataFrame) -> float:
    """Headline score of tune rows with decisions tuned on those same rows (for choosing smoothing)."""
    outputs, targets = task_rows(tune, task)
    if len(targets) < 2:
        return float("nan")
    kind = behaviour(task)
    return score(task, kind.decide(outputs, kind.tune(outputs, targets)), targets)[headline(task)]


def choose_smoothing(
    table: pl.DataFrame, tasks: list[Task], config: SmoothConfig
) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """Smooth one seed's predictions (tune + test rows, labels attached) with, per task, the candidate that
    scores best on the tune rows (ties: the earlier candidate, so list the plainest first).

    Returns:
        the smoothed table and task -> {"chosen": spec, "tune_scores": {spec: score}}.
    """
    choices: dict[str, dict[str, Any]] = {}
    for task in tasks:
        specs = config.specs(task.name) if task.level == "frame" else []
        if not specs:
            continue
        tune = table.filter(pl.col("role") == "tune")
        fill = config.fill_faceless
        scores = {str(spec): tuned_score(task, smooth_table(tune, task, spec, fill)) for spec in specs}
        finite = {k: v for k, v in scores.items() if np.isfinite(v)}
        chosen = max(finite, key=finite.get) if finite else str(specs[0])
        choices[task.name] = {"chosen": chosen, "tune_scores": {k: round(v, 4) for k, v in scores.items()}}
        table = smooth_table(table, task, next(s for s in specs if str(s) == chosen), fill)
    return table.sort("role", "track", "frame"), choices


def score_seed(
    smoothed: pl.DataFrame, raw: pl.DataFrame, train_targets: dict[str, np.ndarray], tasks: list[Task]
) -> tuple[dict[str, Any], dict[str, Any], pl.DataFrame]:
    """Scores of one run and seed, smoothed (headline) and unsmoothed (beside it); decisions of both."""
    parts = {}
    for name, table in (("smoothed", smoothed), ("raw", raw)):
        test, tune = table.filter(pl.col("role") == "test"), table.filter(pl.col("role") == "tune")
        parts[name] = score_run(test, tune, train_targets, tasks)
    scores, decisions, decided = parts["smoothed"]
    raw_scores, raw_decisions, _ = parts["raw"]
    for task_name, values in scores.items():
        key = headline(next(t for t in tasks if t.name == task_name))
        values[f"{key}_unsmoothed"] = raw_scores[task_name][key]
    return scores, {"smoothed": decisions, "unsmoothed": raw_decisions}, decided


def summarise_cv(fold_scores: dict[int, dict[str, dict[str, dict[str, float]]]], tasks: list[Task]) -> dict:
    """CV headline per task: per seed, the mean over folds; then mean and sd over seeds.

    Args:
        fold_scores: seed -> run -> task -> scores (as `score_seed` gives).

    Returns:
        task -> {<headline>, <headline>_seed_sd, <headline>_fold_sd, <headline>_unsmoothed (+ _seed_sd),
        baseline, folds (runs each score covers), per_seed}.

    Raises:
        ValueError: a task is scored in some runs but has no labelled test frame in others (a mean over
            the remaining folds would silently be another experiment).
    """
    summary: dict[str, Any] = {}
    for task in tasks:
        key = headline(task)
        per_seed = {}
        for seed, runs in fold_scores.items():
            values = [scores[task.name] for scores in runs.values() if task.name in scores]
            missing = sorted(run for run, scores in runs.items() if task.name not in scores)
            if values and missing:
                raise ValueError(
                    f"task {task.name}: runs {missing} have no labelled {task.name} test frame while "
                    f"{len(values)} other runs do; every fold must score every task. Change folds.seed, "
                    f"add labels, or drop {task.name} from evaluate.tasks."
                )
            if not values:
                continue
            per_seed[seed] = {
                "score": float(np.mean([v[key] for v in values])),
                "unsmoothed": float(np.mean([v[f"{key}_unsmoothed"] for v in values])),
                "baseline": float(np.mean([v["baseline"] for v in values])),
                "fold_sd": float(np.std([v[key] for v in values], ddof=1)) if len(values) > 1 else 0.0,
                "folds": len(values),
            }
        if not per_seed:
            continue
        entry: dict[str, Any] = {}
        for field, name in (("score", key), ("unsmoothed", f"{key}_unsmoothed")):
            entry[name], entry[f"{name}_seed_sd"] = mean_and_sd([v[field] for v in per_seed.values()])
        entry[f"{key}_fold_sd"] = mean_and_sd([v["fold_sd"] for v in per_seed.values()])[0]
        entry["baseline"] = mean_and_sd([v["baseline"] for v in per_seed.values()])[0]
        entry["folds"] = min(v["folds"] for v in per_seed.values())
        entry["per_seed"] = {str(s): round(v["score"], 4) for s, v in per_seed.items()}
        summary[task.name] = entry
    if all(name in summary for name in MTL_TASKS):
        summary["mtl"] = mtl_summary(summary)
    return summary


# The ABAW multi-task score: VA P + EXPR F1 + AU F1.
MTL_TASKS = ("va", "expr", "au")


def mtl_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """MTL = VA CCC + EXPR F1 + AU F1, per seed (each the mean over folds), then mean and sd over seeds;
    the baseline is the sum of the three baselines."""
    seeds = summary[MTL_TASKS[0]]["per_seed"]
    per_seed = {seed: sum(summary[name]["per_seed"][seed] for name in MTL_TASKS) for seed in seeds}
    score, sd = mean_and_sd(list(per_seed.values()))
    return {
        "score": score,
        "score_seed_sd": sd,
        "baseline": round(sum(summary[name]["baseline"] for name in MTL_TASKS), 4),
        "per_seed": {seed: round(value, 4) for seed, value in per_seed.items()},
        "sum_of": list(MTL_TASKS),
    }


def smooth_runs(models_dir: Path, frames_dir: Path, out_dir: Path, config: Config) -> None:
    """The smooth stage: for every run and seed, `choose_smoothing` on the run's raw predictions; writes
    `artifacts.smoothed_predictions` and `artifacts.smoothing_choice` per run."""
    tasks = present_tasks(frames_dir, config.train.tasks, "train.tasks")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for run in config.folds.runs:
        raw = read_predictions(artifacts.raw_predictions(models_dir / run), tasks)
        columns = raw.columns
        labelled = attach_labels(raw, frames_dir)
        tables, choices = [], {}
        for seed in sorted(raw["seed"].unique().to_list()):
            smoothed, choice = choose_smoothing(labelled.filter(pl.col("seed") == seed), tasks, config.smooth)
            tables.append(smoothed.select(columns))
            choices[str(seed)] = choice
        pl.concat(tables).sort("seed", "role", "track", "frame").write_parquet(
            artifacts.smoothed_predictions(out_dir, run)
        )
        artifacts.smoothing_choice(out_dir, run).write_text(json.dumps(choices, indent=1) + "\n")
        chosen = {
            task: [c[task]["chosen"] for c in choices.values()] for task in choices[next(iter(choices))]
        }
        print(f"smooth {run}: {chosen}")
