"""Per-track sequences for temporal models: features from the Parquet cache, labels, predictions tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.tasks.definitions import Task


def fill_missing(features: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Replace frames without a face by the nearest frame with one (seed 004's adjacent-frame rule).

    Args:
        features: [T, D]; rows where `has_face` is False are ignored.
        has_face: [T] bool.

    Returns:
        [T, D] float32; all zeros if the track has no face at all.
    """
    features = np.asarray(features, dtype=np.float32)
    valid = np.flatnonzero(has_face)
    if valid.size == 0:
        return np.zeros_like(features)
    # For each frame, the index of the closest valid frame (ties go to the earlier one).
    position = np.searchsorted(valid, np.arange(len(has_face)))
    left = valid[np.clip(position - 1, 0, valid.size - 1)]
    right = valid[np.clip(position, 0, valid.size - 1)]
    frames = np.arange(len(has_face))
    nearest = np.where(np.abs(frames - left) <= np.abs(right - frames), left, right)
    return features[nearest]


def load_features(path: Path, views: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one track's feature table and concatenate the chosen views per frame.

    Returns:
        features: [T, D * len(views)] float32 with missing faces filled from neighbours;
        has_face: [T] bool (a frame counts as having a face when the first view has one).
    """
    table = pl.read_parquet(path)
    blocks, has_face = [], None
    for view in views:
        rows = table.filter(pl.col("view") == view).sort("frame")
        if rows.height == 0:
            raise ValueError(
                f"{path}: no features for view '{view}' (has: {table['view'].unique().to_list()})"
            )
        mask = rows["has_face"].to_numpy()
        dim = rows["embedding"].dtype.shape[0]
        values = np.zeros((rows.height, dim), dtype=np.float32)
        values[mask] = np.stack(rows.filter(pl.col("has_face"))["embedding"].to_numpy())
        blocks.append(fill_missing(values, mask))
        has_face = mask if has_face is None else has_face
    return np.concatenate(blocks, axis=1), has_face


def with_track_deviation(features: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Append each frame's deviation from its track's mean face feature.

    The track mean is mostly who the person is (and the scene); the deviation is mostly what the face
    is doing, so subject-independent models lean on it. Uses no labels, so it is the same at test time.

    Args:
        features: [T, D]; has_face: [T] bool.

    Returns:
        [T, 2 * D] float32: the features, then their deviation from the mean over frames with a face.
    """
    mean = features[has_face].mean(axis=0) if has_face.any() else np.zeros(features.shape[1], np.float32)
    return np.concatenate([features, features - mean], axis=1).astype(np.float32)


def label_arrays(labels: pl.DataFrame, tasks: list[Task]) -> dict[str, np.ndarray]:
    """Targets per task from a labels table: expr [T] int, au [T, 12] int, va [T, 2] float."""
    out = {}
    for task in tasks:
        values = labels.select(task.columns).to_numpy()
        out[task.name] = values[:, 0].astype(np.int64) if task.kind == "multiclass" else values
    return out


def output_columns(task: Task) -> list[str]:
    return [f"{task.name}_{i}" for i in range(task.num_outputs)]


def predictions_table(track: str, outputs: dict[str, np.ndarray], tasks: list[Task]) -> pl.DataFrame:
    """One row per frame: `track`, `frame` and `<task>_<i>` columns (probabilities or values)."""
    n_frames = len(next(iter(outputs.values())))
    columns: dict[str, object] = {"track": [track] * n_frames, "frame": np.arange(n_frames, dtype=np.int32)}
    for task in tasks:
        for i, name in enumerate(output_columns(task)):
            columns[name] = outputs[task.name][:, i].astype(np.float32)
    return pl.DataFrame(columns)


def outputs_of(table: pl.DataFrame, task: Task) -> np.ndarray:
    """[N, C] outputs of one task from a predictions table."""
    return table.select(output_columns(task)).to_numpy()
