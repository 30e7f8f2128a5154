"""Stage train: one temporal model (TCN + Transformer by default) per fold, folds run as Prefect tasks.

Outputs: <out>/fold_<k>/{model.pt, history.json, predictions.parquet}.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline.config import device, load_params
from pipeline.flows import fan_out


def run(features_dir: Path, frames_dir: Path, splits_dir: Path, out_dir: Path, params: dict) -> list[dict]:
    folds_path = splits_dir / "folds.parquet"
    folds = sorted(pl.read_parquet(folds_path)["fold"].unique().to_list())
    tracks = pl.read_parquet(frames_dir / "tracks.parquet")
    labelled = {
        task: tracks.filter(pl.col("tasks").str.split(",").list.contains(task)).height
        for task in params["tasks"]
    }
    tasks = [task for task, n in labelled.items() if n]
    for task in sorted(set(params["tasks"]) - set(tasks)):
        print(f"train: task {task} has no labelled track, skipped")
    if not tasks:
        raise ValueError(f"none of the tasks {params['tasks']} has labels")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    jobs = [
        {
            "fold": fold,
            "features_dir": str(features_dir),
            "frames_dir": str(frames_dir),
            "folds_path": str(folds_path),
            "out_dir": str(out_dir),
            "params": {**params, "tasks": tasks},
            "device": device(),
        }
        for fold in folds
    ]
    results = fan_out("pipeline.training.cv:train_fold", jobs, name="train-folds", labels=[f"fold-{k}" for k in folds])
    for result in results:
        fold, tracks, loss = result["fold"], result["train_tracks"], result["final_loss"]
        print(f"train: fold {fold}: {tracks} training tracks, final loss {loss:.4f}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.features, args.frames, args.splits, args.out, load_params("train", args.params))


if __name__ == "__main__":
    main()
