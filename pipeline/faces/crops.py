"""Gather aligned face crops (and their frame labels) from the faces stage's per-track outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline import artifacts


def track_crops(faces_dir: Path, track: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames with a face and their crops for one track.

    Returns:
        frames: [M] int, decoded-frame indices; crops: [M, S, S, 3] uint8 (memory-mapped).
    """
    table = pl.read_parquet(artifacts.face_table(faces_dir, track))
    frames = table.filter(pl.col("has_face"))["frame"].to_numpy()
    crops = np.load(artifacts.face_crops(faces_dir, track, view), mmap_mode="r")
    if len(crops) != len(frames):
        raise ValueError(
            f"{faces_dir / track}: {len(crops)} {view} crops but {len(frames)} frames with a face"
        )
    return frames, crops


def gather_crops(
    faces_dir: Path, tracks: list[str], view: str, *, stride: int = 1
) -> tuple[np.ndarray, pl.DataFrame]:
    """Every `stride`-th face crop of the given tracks, and where each comes from.

    Returns:
        crops: [N, S, S, 3] uint8; index: N rows (track, frame), the decoded frame of each crop, so a
        caller can join labels without this module knowing about tasks.
    """
    crops, index = [], []
    for track in tracks:
        frames, track_crops_ = track_crops(faces_dir, track, view)
        keep = np.arange(0, len(frames), stride)
        crops.append(np.asarray(track_crops_[keep]))
        index.append(  # explicit dtypes: a faceless track's empty columns would otherwise be Null-typed
            pl.DataFrame(
                {"track": [track] * len(keep), "frame": frames[keep].astype(np.int32)},
                schema={"track": pl.String, "frame": pl.Int32},
            )
        )
    if not crops or sum(len(c) for c in crops) == 0:
        raise ValueError(f"{faces_dir}: no face crops in view '{view}' for {len(tracks)} tracks")
    return np.concatenate(crops), pl.concat(index)
