"""Stage evaluate: official ABAW metrics per fold and over folds, trivial baselines, plots.

Outputs (cache: false, committed): metrics/folds/fold_<k>.json, metrics/cv.json,
plots/folds.csv, plots/confusion.csv, plots/va_timeline.csv and PNGs of the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

import pipeline  # noqa: F401
from pipeline.config import load_params
from pipeline.evaluation.scoring import attach_labels, evaluate_fold, score, summarise, targets_of
from pipeline.evaluation.plots import write_confusion, write_fold_scores, write_va_timeline
from pipeline.tasks.definitions import get_task

HEADLINE = {"expr": "f1", "au": "f1", "va": "ccc"}


def run(
    models_dir: Path, smoothed_dir: Path, frames_dir: Path, metrics_dir: Path, plots_dir: Path, params: dict
) -> dict:
    tasks = [get_task(name) for name in params["tasks"]]
    labels_dir = frames_dir / "labels"
    tracks = pl.read_parquet(frames_dir / "tracks.parquet")
    (metrics_dir / "folds").mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)

    paths = sorted(smoothed_dir.glob("fold_*.parquet"))
    smoothed = {p.stem: attach_labels(pl.read_parquet(p), labels_dir) for p in paths}
    raw = {
        p.stem: attach_labels(pl.read_parquet(models_dir / p.stem / "predictions.parquet"), labels_dir)
        for p in paths
    }

    def others(tables: dict[str, pl.DataFrame], fold: str) -> pl.DataFrame:
        return pl.concat([table for name, table in tables.items() if name != fold])

    fold_scores, decided = [], []
    for path in paths:
        scores, test_rows = evaluate_fold(smoothed[path.stem], others(smoothed, path.stem), tasks)
        raw_scores, _ = evaluate_fold(raw[path.stem], others(raw, path.stem), tasks)
        for task, values in scores.items():
            values[f"{HEADLINE[task]}_unsmoothed"] = raw_scores[task][HEADLINE[task]]
        (metrics_dir / "folds" / f"{path.stem}.json").write_text(json.dumps(scores, indent=1) + "\n")
        fold_scores.append(scores)
        decided.append(test_rows)
    if not fold_scores:
        raise ValueError(f"{smoothed_dir}: no fold_*.parquet predictions")

    cv = summarise(fold_scores)
    # Pooled over folds, only the official Validation_Set tracks: their labels never reached the encoder.
    pooled = attach_labels(pl.concat(decided, how="diagonal"), labels_dir).join(
        tracks.select("track", "split"), on="track"
    )
    validation = pooled.filter(pl.col("split") == "Validation_Set")
    cv["validation_set"] = {}
    for task in tasks:
        if task.name not in cv or validation.height == 0:
            continue
        targets = targets_of(validation, task)
        valid = task.valid_mask(targets)
        if valid.any():
            predicted = np.asarray(validation[f"{task.name}_pred"].to_list())
            headline = score(task, predicted[valid], targets[valid])[HEADLINE[task.name]]
            cv["validation_set"][f"{task.name}_{HEADLINE[task.name]}"] = round(headline, 4)
    (metrics_dir / "cv.json").write_text(json.dumps(cv, indent=1) + "\n")

    write_fold_scores(fold_scores, HEADLINE, plots_dir / "folds.csv")
    if "expr" in cv:
        expr = get_task("expr")
        targets = targets_of(pooled, expr)
        valid = expr.valid_mask(targets)
        write_confusion(
            targets[valid],
            pooled["expr_pred"].to_numpy()[valid],
            plots_dir / "confusion.csv",
            plots_dir / "confusion.png",
        )
    if "va" in cv:
        va = get_task("va")
        labelled = pooled.filter(pl.col("valence") != va.invalid)
        # The held-out track with the most labelled frames, preferring the official validation split.
        track = (
            labelled.group_by("track", "split")
            .len()
            .sort(pl.col("split") == "Validation_Set", "len", "track", descending=[True, True, False])[
                "track"
            ][0]
        )
        rows = labelled.filter(pl.col("track") == track).sort("frame")
        write_va_timeline(
            track,
            rows["frame"].to_numpy(),
            targets_of(rows, va),
            np.asarray(rows["va_pred"].to_list()),
            plots_dir / "va_timeline.csv",
            plots_dir / "va_timeline.png",
        )
    print(json.dumps(cv, indent=1))
    return cv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--smoothed", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(
        args.models,
        args.smoothed,
        args.frames,
        args.metrics,
        args.plots,
        load_params("evaluate", args.params),
    )


if __name__ == "__main__":
    main()
