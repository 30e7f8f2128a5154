"""One evaluation run of sequence training: fit on the run's train tracks (one model per seed), predict its
tune and test tracks, and keep everything a later `predict` needs in the model checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipeline import artifacts
from pipeline.config import TrainConfig
from pipeline.evaluation.folds import run_tracks
from pipeline.features.sequences import TrackSequence, load_track, predictions_table
from pipeline.inference.sequences import predict_sequence
from pipeline.models.encoders import save_checkpoint
from pipeline.models.sequence import model_from_checkpoint
from pipeline.tasks.definitions import get_tasks
from pipeline.training.sequence import train_sequence_model


def train_run(
    run: str,
    features_dir: Path,
    frames_dir: Path,
    splits_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    device: str = "cpu",
) -> pl.DataFrame:
    """Train the run's sequence models and write their predictions on the tune and test tracks.

    Writes `<out_dir>/seed_<s>/model.pt` and `history.json` per seed, and `<out_dir>/predictions.parquet`
    (seed, role, track, frame, `<task>_<i>` outputs), so smoothing and evaluation never retrain.
    """
    tracks = run_tracks(pl.read_parquet(artifacts.roles_table(splits_dir)), run)
    tasks = get_tasks(config.tasks)

    def load(track: str) -> TrackSequence:
        return load_track(
            track,
            artifacts.feature_table(features_dir, track),
            artifacts.labels_table(frames_dir, track),
            list(config.views),
            tasks,
            config.track_features,
        )

    data = {role: [load(t) for t in names] for role, names in tracks.items()}
    tables = []
    for seed in config.seeds:
        checkpoint, history = train_sequence_model(data["train"], config, seed=seed, device=device)
        model_path = artifacts.sequence_model(out_dir, seed)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(checkpoint, model_path)
        artifacts.sequence_history(out_dir, seed).write_text(json.dumps(history, indent=1) + "\n")
        model = model_from_checkpoint(checkpoint, device)
        for role in ("tune", "test"):
            for sequence in data[role]:
                outputs = predict_sequence(model, sequence, config.window, config.stride, device)
                table = predictions_table(sequence.track, outputs, tasks)
                tables.append(table.with_columns(pl.lit(seed).alias("seed"), pl.lit(role).alias("role")))
        print(
            f"{run} seed {seed}: final training loss {history[-1]['loss']:.4f} on {len(data['train'])} tracks"
        )
    predictions = pl.concat(tables).select(
        "seed", "role", "track", "frame", pl.exclude("seed", "role", "track", "frame")
    )
    predictions.write_parquet(artifacts.raw_predictions(out_dir))
    return predictions
