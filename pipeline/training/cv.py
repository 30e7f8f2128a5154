"""One cross-validation fold of temporal training: fit on the other folds, predict every track."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.models.encoders import save_checkpoint
from pipeline.engine import load_temporal, train_temporal
from pipeline.features.sequences import label_arrays, load_features, predictions_table, with_track_deviation
from pipeline.tasks.definitions import Task, get_task
from pipeline.models.sequence import predict_sequence


def load_track(
    track: str,
    features_dir: Path,
    labels_dir: Path,
    views: list[str],
    tasks: list[Task],
    track_deviation: bool,
):
    """features [T, D] and targets (task -> [T] or [T, C]) of one track, aligned by decoded frame."""
    features, has_face = load_features(features_dir / f"{track}.parquet", views)
    if track_deviation:
        features = with_track_deviation(features, has_face)
    targets = label_arrays(pl.read_parquet(labels_dir / f"{track}.parquet"), tasks)
    if len(features) != len(next(iter(targets.values()))):
        raise ValueError(
            f"{track}: {len(features)} feature rows but {len(next(iter(targets.values())))} label rows"
        )
    return features, targets


def train_fold(
    fold: int,
    features_dir: str,
    frames_dir: str,
    folds_path: str,
    out_dir: str,
    params: dict[str, Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """Train the temporal model of one fold and write its model and predictions.

    Writes `<out_dir>/fold_<k>/model.pt`, `history.json` and `predictions.parquet` (the fold's held-out
    tracks), so smoothing and evaluation never retrain.
    """
    folds = pl.read_parquet(folds_path)
    tasks = [get_task(name) for name in params["tasks"]]
    features_dir, labels_dir = Path(features_dir), Path(frames_dir) / "labels"
    data = {
        t: load_track(t, features_dir, labels_dir, params["views"], tasks, params["track_deviation"])
        for t in folds["track"]
    }
    train_tracks = folds.filter(pl.col("fold") != fold)["track"].to_list()

    checkpoint, history = train_temporal(
        [data[t] for t in train_tracks],
        tasks=params["tasks"],
        model=params["model"],
        model_kwargs=dict(params["model_kwargs"]),
        window=params["window"],
        stride=params["stride"],
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        warmup_epochs=params["warmup_epochs"],
        feature_noise=params["feature_noise"],
        class_balance=params["class_balance"],
        seed=params["seed"] + fold,
        device=device,
    )
    model = load_temporal(checkpoint, device=device)
    tables = []
    for track in folds.filter(pl.col("fold") == fold)["track"]:
        outputs = predict_sequence(model, data[track][0], params["window"], params["stride"], device)
        tables.append(predictions_table(track, outputs, tasks))

    fold_dir = Path(out_dir) / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, fold_dir / "model.pt")
    (fold_dir / "history.json").write_text(json.dumps(history, indent=1))
    pl.concat(tables).write_parquet(fold_dir / "predictions.parquet")
    return {
        "fold": fold,
        "train_tracks": len(train_tracks),
        "final_loss": float(history[-1]["loss"]),
    }
