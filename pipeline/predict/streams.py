"""Per-frame model inputs of one person track, held as what was measured and read a window at a time.

A sequence model sees [T, D] streams (`pipeline.features.sequences.TrackSequence`): one row per timeline
frame, frames without a face filled from the nearest frame with one, then raw, minus the track mean, or both
(`track_features`). Built whole, those are several [T, D] float32 copies per stream and person, which grow
with the video. `IndexedStream` keeps only the M measured rows (in memory, or a `.npy` on disk read with
`pipeline.faces.storage.read_rows`) and a [T] index, and makes each window on demand, equal to the same
rows of the whole stream bit for bit. `row_mean` gives the track mean in one pass over the rows, in the
order and float32 arithmetic of numpy's `mean(axis=0)`, so the deviation is the same too.
"""

from __future__ import annotations

import numpy as np

from pipeline.faces.storage import read_rows
from pipeline.faces.table import nearest_usable
from pipeline.features.sequences import TRACK_FEATURES

MEAN_BLOCK = 4096  # rows read at a time by `row_mean`


def face_rows(has_face: np.ndarray) -> np.ndarray:
    """[T] bool -> [T] int64: the row among the face frames (in frame order) that each frame takes, its
    own or its nearest face frame's (`fill_missing`'s rule); zeros when there is no face at all."""
    face_frames = np.flatnonzero(has_face)
    if not len(face_frames):
        return np.zeros(len(has_face), np.int64)
    return np.searchsorted(face_frames, nearest_usable(has_face))


def row_mean(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """[D] float32 mean of the rows of values [M, D] (those where mask [M] is True), zeros when none.

    Rows are added one after another into a float32 sum, as `values[mask].mean(axis=0)` adds them, so the
    result is the same bit for bit; a file is read `MEAN_BLOCK` rows at a time.
    """
    total = np.zeros(values.shape[1], np.float32)
    count = 0
    for start in range(0, len(values), MEAN_BLOCK):
        block = read_rows(values, start, start + MEAN_BLOCK)
        if mask is not None:
            block = block[mask[start : start + MEAN_BLOCK]]
        total = np.add.reduce(np.concatenate([total[None], block]), axis=0)
        count += len(block)
    return total / np.float32(count) if count else total


class IndexedStream:
    """A [T, D'] stream: `track_features(values[rows], ..., mode)` without building it.

    Args:
        values: [M, D] float32 measured rows (in memory or memory-mapped; a map is read with plain reads).
        rows: [T] int, the row of `values` each frame takes (its own, or its nearest face frame's).
        mode: "raw", "deviation" or "both" (`pipeline.features.sequences.TRACK_FEATURES`).
        mean: [D] the track mean subtracted for "deviation" and "both" (`row_mean`).

    `stream[start:end]` is the [end - start, D'] window (D' = 2 D for "both"); `len(stream)` is T.
    """

    def __init__(self, values: np.ndarray, rows: np.ndarray, mode: str, mean: np.ndarray) -> None:
        if mode not in TRACK_FEATURES:
            raise ValueError(f"track features must be one of {TRACK_FEATURES}, got '{mode}'")
        self.values = values
        self.rows = np.asarray(rows, np.int64)
        self.mode = mode
        self.mean = np.asarray(mean, np.float32)
        width = values.shape[1] * (2 if mode == "both" else 1)
        self.shape = (len(self.rows), width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, frames: slice) -> np.ndarray:
        if not isinstance(frames, slice) or frames.step not in (None, 1):
            raise TypeError("an IndexedStream is read by windows: stream[start:end]")
        rows = self.rows[frames]
        if not len(rows) or not len(self.values):
            return np.zeros((len(rows), self.shape[1]), np.float32)
        low = int(rows.min())  # rows of a window are close together: read their span once
        window = read_rows(self.values, low, int(rows.max()) + 1)[rows - low]
        if self.mode == "raw":
            return window
        deviation = window - self.mean
        return deviation if self.mode == "deviation" else np.concatenate([window, deviation], axis=1)
