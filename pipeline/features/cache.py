"""Frozen-encoder features cached as Parquet: one row per (timeline frame, view), so temporal models
can change without re-extracting anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import artifacts, resume
from pipeline.faces.crops import track_crops
from pipeline.inference.images import encode_images
from pipeline.models.encoders import encoder_from_checkpoint, feature_dim, load_checkpoint


def feature_table(n_frames: int, view: str, frames: np.ndarray, embeddings: np.ndarray) -> pa.Table:
    """Rows for every timeline frame of one view; frames without a face get a null embedding.

    Args:
        n_frames: timeline frames of the track.
        frames: [M] frames with a face; embeddings: [M, D] float32.
    """
    dim = embeddings.shape[1]
    has_face = np.zeros(n_frames, dtype=bool)
    has_face[frames] = True
    flat = np.zeros((n_frames, dim), dtype=np.float32)
    flat[frames] = embeddings
    values = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=pa.array(~has_face))
    return pa.table(
        {
            "frame": pa.array(np.arange(n_frames, dtype=np.int32)),
            "view": pa.array([view] * n_frames, pa.string()),
            "has_face": pa.array(has_face),
            "embedding": values,
        }
    )


# The code whose changes invalidate every cached feature table (the encoder, its preprocessing, the crops).
FEATURE_CODE = (
    "pipeline.faces.crops",
    "pipeline.features.cache",
    "pipeline.inference.images",
    "pipeline.models.encoders",
)


def track_key(encoder_sha256: str, faces_key: str | None, n_frames: int, views: list[str], code: str) -> str:
    """Resume key of one track's feature table: the encoder's bytes, the track's face unit (its crops),
    its frame count, the views and the feature code."""
    return resume.unit_key(
        {"encoder": encoder_sha256, "faces": faces_key, "n_frames": n_frames, "views": views, "code": code}
    )


def extract_tracks(
    tracks: list[str],
    n_frames: list[int],
    views: list[str],
    faces_dir: str,
    checkpoint: str,
    out_dir: str,
    keys: list[str],
    batch_size: int = 128,
    device: str = "cpu",
) -> int:
    """Write `<out_dir>/<track>.parquet` for each track, each committed atomically with its resume key
    (`track_key`); returns the number of rows written.

    Paths are strings so the call is cheap to ship to a Prefect worker process.
    """
    if not tracks:
        return 0
    encoder = encoder_from_checkpoint(load_checkpoint(checkpoint))  # built once for every track
    rows = 0
    for track, count, key in zip(tracks, n_frames, keys, strict=True):
        tables = []
        for view in views:
            frames, crops = track_crops(Path(faces_dir), track, view)
            embeddings = (
                encode_images(encoder, np.asarray(crops), batch_size=batch_size, device=device)
                if len(frames)
                else np.zeros((0, feature_dim(encoder)), dtype=np.float32)
            )
            tables.append(feature_table(count, view, frames, embeddings))
        table = pa.concat_tables(tables)
        resume.commit_parquet(table, artifacts.feature_table(Path(out_dir), track), key)
        rows += table.num_rows
    return rows
