"""Evaluate every run: decisions tuned on its tune tracks, official scores on its test tracks (smoothed and
unsmoothed), summaries over folds and seeds, the decision knobs a later `predict` applies, and plots.

Writes metrics/cv.json, metrics/official.json, metrics/runs/<run>.json, <decisions>/<run>.json and the
plots of `pipeline.evaluation.plots`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import artifacts
from pipeline.config import OFFICIAL_RUN, Config
from pipeline.evaluation.folds import run_tracks
from pipeline.evaluation.plots import write_absent, write_confusion, write_run_scores, write_va_timeline
from pipeline.evaluation.report import score_seed, summarise_cv
from pipeline.evaluation.scoring import attach_labels, read_predictions, task_rows
from pipeline.features.sequences import label_arrays, output_columns, present_tasks, targets_of
from pipeline.tasks.definitions import get_task
from pipeline.tasks.scores import headline


def average_seeds(table: pl.DataFrame, tasks) -> pl.DataFrame:
    """The seed ensemble of a predictions table: per (role, track, frame), every task's outputs averaged
    over seeds (probabilities for classifiers, values for regression); labels and `source` kept."""
    outputs = [column for task in tasks for column in output_columns(task)]
    keys = ["role", "track", "frame"]
    averaged = table.group_by(keys, maintain_order=True).agg(
        [pl.col(c).mean() for c in outputs] + [pl.exclude([*keys, *outputs, "seed"]).first()]
    )
    return averaged.with_columns(pl.lit(-1).alias("seed")).sort(keys)


def add_ensemble(summary: dict, runs: dict[str, dict], tasks) -> None:
    """Put the seed ensemble's headline (mean over the runs) beside each task's mean over seeds, and the
    MTL sum of them."""
    for task in tasks:
        key = headline(task)
        values = [scores[task.name][key] for scores in runs.values() if task.name in scores]
        if task.name in summary and values:
            summary[task.name][f"{key}_seed_ensemble"] = round(float(np.mean(values)), 4)
    if "mtl" in summary:
        summary["mtl"]["score_seed_ensemble"] = round(
            sum(
                summary[name][f"{headline(get_task(name))}_seed_ensemble"]
                for name in summary["mtl"]["sum_of"]
            ),
            4,
        )


def train_targets(frames_dir: Path, tracks: list[str], tasks) -> dict[str, np.ndarray]:
    """task -> valid targets of a run's training tracks (for the majority-class baseline)."""
    parts = [label_arrays(pl.read_parquet(artifacts.labels_table(frames_dir, t)), tasks) for t in tracks]
    out = {}
    for task in tasks:
        values = np.concatenate([p[task.name] for p in parts])
        out[task.name] = values[task.valid_mask(values)]
    return out


TASK_PLOTS = {
    "expr": ("confusion", ["actual", "predicted"]),
    "va": ("va_timeline", ["frame", "valence_label", "valence_pred", "arousal_label", "arousal_pred"]),
}


def write_task_plots(pooled: pl.DataFrame | None, scored: set[str], plots_dir: Path) -> None:
    """The EXPR confusion and a VA timeline over the CV test folds; a plot that cannot be drawn (task not
    labelled or not evaluated, no CV run) gets a stand-in that says why, so every declared plot exists."""
    for name, (stem, columns) in TASK_PLOTS.items():
        csv, png = plots_dir / f"{stem}.csv", plots_dir / f"{stem}.png"
        if name not in scored or pooled is None:
            why = "no labels under data.root or not in evaluate.tasks" if name not in scored else "no CV run"
            write_absent(f"no {name.upper()} plot: {why}", columns, csv, png)
        elif name == "expr":
            expr = get_task("expr")
            true = targets_of(pooled, expr)
            valid = expr.valid_mask(true)
            predicted = np.asarray(pooled["expr_pred"].to_list())
            write_confusion(true[valid], predicted[valid], csv, png)
        else:
            va = get_task("va")
            labelled = pooled.filter(pl.col("valence") != va.invalid)
            track = (
                labelled.group_by("track").len().sort("len", "track", descending=[True, False])["track"][0]
            )
            rows_va = labelled.filter(pl.col("track") == track).sort("frame")
            outputs, true = task_rows(rows_va, va)
            write_va_timeline(track, rows_va["frame"].to_numpy(), true, np.clip(outputs, -1, 1), csv, png)


def evaluate_runs(
    models_dir: Path,
    smoothed_dir: Path,
    frames_dir: Path,
    splits_dir: Path,
    metrics_dir: Path,
    plots_dir: Path,
    decisions_dir: Path,
    config: Config,
) -> dict[str, dict]:
    """Score every run in `config.folds.runs` and write the evaluate stage's outputs; returns the
    summaries {"cv": ..., "official": ...}."""
    tasks = present_tasks(frames_dir, config.evaluate.tasks, "evaluate.tasks")
    absent = sorted(set(config.evaluate.tasks) - {task.name for task in tasks})
    roles = pl.read_parquet(artifacts.roles_table(splits_dir))
    shutil.rmtree(metrics_dir / "runs", ignore_errors=True)
    (metrics_dir / "runs").mkdir(parents=True)
    plots_dir.mkdir(parents=True, exist_ok=True)
    decisions_dir.mkdir(parents=True, exist_ok=True)

    scores_by_seed: dict[int, dict[str, dict]] = {}
    ensembles: dict[str, dict] = {}  # run -> scores of the seed ensemble
    rows, pooled = [], []
    for run in config.folds.runs:
        raw = attach_labels(read_predictions(artifacts.raw_predictions(models_dir / run), tasks), frames_dir)
        smoothed = attach_labels(
            read_predictions(artifacts.smoothed_predictions(smoothed_dir, run), tasks), frames_dir
        )
        targets = train_targets(frames_dir, run_tracks(roles, run)["train"], tasks)
        smoothing = json.loads(artifacts.smoothing_choice(smoothed_dir, run).read_text())
        report, decisions = {}, {}
        for seed in sorted(raw["seed"].unique().to_list()):
            pick = pl.col("seed") == seed
            scores, knobs, decided = score_seed(smoothed.filter(pick), raw.filter(pick), targets, tasks)
            scores_by_seed.setdefault(seed, {})[run] = scores
            report[str(seed)] = {"scores": scores, "smoothing": smoothing[str(seed)], "decisions": knobs}
            decisions[str(seed)] = {"smoothing": smoothing[str(seed)], "decisions": knobs["smoothed"]}
            rows.append(
                {"run": run, "seed": seed}
                | {
                    f"{t}_{headline(get_task(t))}": round(s[headline(get_task(t))], 4)
                    for t, s in scores.items()
                }
            )
            if run != OFFICIAL_RUN and seed == config.train.seeds[0]:
                pooled.append(
                    decided.join(smoothed.filter(pick & (pl.col("role") == "test")), on=["track", "frame"])
                )
        if len(config.train.seeds) > 1:  # the seed ensemble: every seed's probabilities averaged
            scores, knobs, _ = score_seed(
                average_seeds(smoothed, tasks), average_seeds(raw, tasks), targets, tasks
            )
            report["ensemble"] = {"scores": scores, "decisions": knobs}
            ensembles[run] = scores
        artifacts.run_metrics(metrics_dir, run).write_text(json.dumps(report, indent=1) + "\n")
        artifacts.decisions(decisions_dir, run).write_text(json.dumps(decisions, indent=1) + "\n")

    cv_runs = {s: {r: v for r, v in runs.items() if r != OFFICIAL_RUN} for s, runs in scores_by_seed.items()}
    official = {s: {r: v for r, v in runs.items() if r == OFFICIAL_RUN} for s, runs in scores_by_seed.items()}
    summaries = {"cv": summarise_cv(cv_runs, tasks), "official": summarise_cv(official, tasks)}
    for name, summary in summaries.items():
        summary["seeds"] = len(scores_by_seed)
        runs = {run: v for run, v in ensembles.items() if (run == OFFICIAL_RUN) == (name == "official")}
        if runs:
            add_ensemble(summary, runs, tasks)
        if absent:
            summary["absent_tasks"] = {
                name: "no labels under data.root: not trained or scored" for name in absent
            }
        summary["smoothed"] = (
            "headline scores are smoothed; <metric>_unsmoothed is the same without smoothing"
        )
        (metrics_dir / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_run_scores(rows, plots_dir / "runs.csv")

    pooled_table = pl.concat(pooled, how="diagonal") if pooled else None
    write_task_plots(pooled_table, {task.name for task in tasks}, plots_dir)
    print(
        json.dumps(
            {
                name: {
                    t: {k: v for k, v in s.items() if k != "per_seed"}
                    for t, s in summary.items()
                    if isinstance(s, dict)
                }
                for name, summary in summaries.items()
            },
            indent=1,
        )
    )
    return summaries
