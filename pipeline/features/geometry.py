"""Face geometry features: the 68 dlib landmarks of every frame, normalised for where the face is, how
big it is and how it is rolled, so what is left is mostly what the face is doing (brows raised, lips
stretched, jaw dropped).

Geometry is the classic complement of appearance for action units (OpenFace's AU detector uses both):
it needs no training, so one cache serves every run (`data/geometry/<track>.parquet`, the feature-table
schema of `pipeline.features.cache` with the single view `GEOMETRY_VIEW`), and a sequence model reads it
as one more named stream (`train.views: [eye_mouth, landmarks]`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline import artifacts
from pipeline.config import GEOMETRY_STREAM
from pipeline.faces.table import points_array
from pipeline.features.cache import feature_table

GEOMETRY_VIEW = GEOMETRY_STREAM  # the stream name sequence models see
N_POINTS = 68
RIGHT_EYE = slice(36, 42)  # dlib indices: the subject's right eye (image left)
LEFT_EYE = slice(42, 48)


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Similarity-normalise 68-point landmarks.

    Each face is translated so the midpoint of the eye centres is the origin, rotated so the eyes lie on
    a horizontal line, and scaled so the inter-ocular distance is 1.

    Args:
        landmarks: [N, 68, 2] or [N, 136] (x0, y0, x1, y1, ...) in frame pixels.

    Returns:
        [N, 136] float32 (x0, y0, ...) in inter-ocular units.

    Raises:
        ValueError: a face whose eye centres coincide (a degenerate landmark fit).
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, N_POINTS, 2)
    right, left = points[:, RIGHT_EYE].mean(axis=1), points[:, LEFT_EYE].mean(axis=1)
    axis = left - right  # [N, 2]
    iod = np.linalg.norm(axis, axis=1)
    if (iod < 1.0e-6).any():
        raise ValueError(f"face {int(np.flatnonzero(iod < 1.0e-6)[0])}: eye centres coincide")
    angle = np.arctan2(axis[:, 1], axis[:, 0])
    cos, sin = np.cos(-angle), np.sin(-angle)
    rotation = np.stack([np.stack([cos, -sin], axis=1), np.stack([sin, cos], axis=1)], axis=1)  # [N, 2, 2]
    centred = points - ((right + left) / 2)[:, None, :]
    normalised = np.einsum("nij,npj->npi", rotation, centred) / iod[:, None, None]
    return normalised.reshape(len(points), 2 * N_POINTS).astype(np.float32)


def face_geometry(table: pl.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised landmarks of the frames with a usable face of one face table (`pipeline.faces.table`).

    Returns:
        frames [M] with a face, geometry [M, 136] float32.

    Raises:
        ValueError: a frame marked `has_face` without 68 landmarks (names `where` and the frame).
    """
    faces = table.filter(pl.col("has_face")).sort("frame")
    frames = faces["frame"].to_numpy()
    complete, landmarks = points_array(faces["landmarks"], 2 * N_POINTS)
    bad = np.flatnonzero(~complete)
    if len(bad):
        raise ValueError(
            f"{where}: frame {int(frames[bad[0]])} has a face but no {N_POINTS}-point landmarks "
            f"({len(bad)} frames); rerun the faces stage"
        )
    geometry = normalise_landmarks(landmarks) if len(frames) else np.zeros((0, 2 * N_POINTS), np.float32)
    return frames, geometry


def track_geometry(faces_dir: Path, track: str) -> tuple[int, np.ndarray, np.ndarray]:
    """One track's normalised landmarks on its frames with a usable face (`face_geometry`).

    Returns:
        n_frames (T, timeline frames), frames [M] with a face, geometry [M, 136] float32.
    """
    path = artifacts.face_table(faces_dir, track)
    table = pl.read_parquet(path, columns=["frame", "has_face", "landmarks"])
    frames, geometry = face_geometry(table, str(path))
    return table.height, frames, geometry


def geometry_table(faces_dir: Path, track: str):
    """The track's geometry as a feature table (`pipeline.features.cache.feature_schema`, view
    `GEOMETRY_VIEW`)."""
    n_frames, frames, geometry = track_geometry(faces_dir, track)
    return feature_table(n_frames, GEOMETRY_VIEW, frames, geometry)
