"""Gather aligned face crops (and their frame labels) from the faces stage's per-track outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.features.sequences import label_arrays
from pipeline.tasks.definitions import Task


def track_crops(faces_dir: Path, track: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames with a face and their crops for one track.

    Returns:
        frames: [M] int, decoded-frame indices; crops: [M, S, S, 3] uint8 (memory-mapped).
    """
    table = pl.read_parquet(faces_dir / track / "table.parquet")
    frames = table.filter(pl.col("has_face"))["frame"].to_numpy()
    crops = np.load(faces_dir / track / f"{view}.npy", mmap_mode="r")
    if len(crops) != len(frames):
        raise ValueError(
            f"{faces_dir / track}: {len(crops)} {view} crops but {len(frames)} frames with a face"
        )
    return frames, crops


def gather_crops(
    faces_dir: Path,
    tracks: list[str],
    view: str,
    *,
    stride: int = 1,
    labels_dir: Path | None = None,
    tasks: list[Task] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every `stride`-th face crop of the given tracks, with their targets when `labels_dir` is given.

    Returns:
        crops: [N, S, S, 3] uint8; targets: task name -> [N] or [N, C] (invalid markers kept).
    """
    crops, targets = [], {t.name: [] for t in tasks or []}
    for track in tracks:
        frames, track_crops_ = track_crops(faces_dir, track, view)
        keep = np.arange(0, len(frames), stride)
        crops.append(np.asarray(track_crops_[keep]))
        if labels_dir is not None:
            labels = label_arrays(pl.read_parquet(labels_dir / f"{track}.parquet"), tasks or [])
            for name, values in labels.items():
                targets[name].append(values[frames[keep]])
    if not crops or sum(len(c) for c in crops) == 0:
        raise ValueError(f"{faces_dir}: no face crops in view '{view}' for {len(tracks)} tracks")
    return np.concatenate(crops), {name: np.concatenate(v) for name, v in targets.items()}
