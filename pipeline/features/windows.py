"""Windows of frames streamed from one track's feature table, a record batch at a time.

A track's table (`pipeline.features.cache`) is written frame-major in row groups of bounded size, so a
reader that walks the file in order holds only about one window plus one record batch of rows per view:
a long track never has to fit in memory. (A view-major table, as older caches wrote, still reads
correctly, but then the first views are buffered until the last one arrives.)

Windows start at frames 0, stride, 2 * stride, ... and hold `window` frames; the last one is *shorter*
(not padded): it ends at the track's last frame, and it is the first window that reaches it, so every
frame is covered and no window is empty. A track shorter than `window` gives one short window.
Frames without a face hold zeros (no neighbour fill: that needs the whole track); use the mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.features.cache import ROW_GROUP_ROWS
from pipeline.features.sequences import FEATURE_COLUMNS, FeatureError, _check_values

Window = tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]


def batch_views(
    batch: pa.RecordBatch, views: list[str], dim: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Split one record batch by view.

    Returns:
        view -> (frames [n] int, embeddings [n, D] float32 with zeros where there is no face, has_face [n]).
    """
    embedding = batch.column("embedding")
    # The child array of a fixed-size list keeps a slot for every row (nulls too); mind the batch's offset.
    flat = embedding.values.slice(embedding.offset * dim, len(embedding) * dim)
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    present = embedding.is_valid().to_numpy(zero_copy_only=False)
    frames = batch.column("frame").to_numpy()
    names = batch.column("view").to_numpy(zero_copy_only=False)
    has_face = batch.column("has_face").to_numpy(zero_copy_only=False)
    out = {}
    for view in views:
        rows = names == view
        out[view] = (frames[rows], np.where(present[rows, None], values[rows], 0.0), has_face[rows])
        if (has_face[rows] & ~present[rows]).any():
            frame = int(frames[rows][has_face[rows] & ~present[rows]][0])
            raise FeatureError(f"view '{view}', frame {frame}: has_face but no embedding")
    return out


def iter_windows(
    path: Path, views: list[str], window: int, stride: int, *, batch_rows: int = ROW_GROUP_ROWS
) -> Iterator[Window]:
    """Windows of one track's features, read incrementally (`ParquetFile.iter_batches`).

    Args:
        path: a feature table; views: the views to return; window, stride: frames (1 <= stride <= window).
        batch_rows: rows per record batch read.

    Yields:
        (start frame, view -> float32 [w, D] (zeros where no face), view -> bool [w] has_face), with
        w = window except for the last window, which is shorter when the track ends (see module doc).

    Raises:
        FeatureError: a view is missing, a view's frames are not 0, 1, 2, ..., a face has no embedding, or
            a value is not finite or too large (the checks of `load_streams`).
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride <= window, got window={window}, stride={stride}")
    parquet = pq.ParquetFile(path)
    dim = parquet.schema_arrow.field("embedding").type.list_size
    values = {view: np.zeros((0, dim), np.float32) for view in views}  # frames base, base + 1, ...
    masks = {view: np.zeros(0, bool) for view in views}
    base, start, end = 0, 0, 0  # buffer's first frame, next window's start, last window's end

    def cut(stop: int) -> Window:
        """The window [start, stop) from the buffers."""
        lo, hi = start - base, stop - base
        return start, {v: values[v][lo:hi] for v in views}, {v: masks[v][lo:hi] for v in views}

    for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(FEATURE_COLUMNS)):
        try:
            parts = batch_views(batch, views, dim)
        except FeatureError as error:
            raise FeatureError(f"{path}: {error}") from None
        for view, (frames, embeddings, has_face) in parts.items():
            expected = base + len(masks[view]) + np.arange(len(frames))
            if not np.array_equal(frames, expected):
                wrong = int(np.flatnonzero(frames != expected)[0])
                raise FeatureError(
                    f"{path}: view '{view}' must have one row per frame 0, 1, 2, ...; "
                    f"frame {int(expected[wrong])} is followed by frame {int(frames[wrong])}"
                )
            _check_values(embeddings[has_face], frames[has_face], path, view)
            values[view] = np.concatenate([values[view], embeddings])
            masks[view] = np.concatenate([masks[view], has_face])
        # Every full window that all views have reached.
        while all(base + len(masks[v]) >= start + window for v in views):
            yield cut(start + window)
            end, start = start + window, start + stride
            drop = start - base  # frames before the next start are not needed again
            values = {v: values[v][drop:] for v in views}
            masks = {v: masks[v][drop:] for v in views}
            base = start

    lengths = {view: base + len(masks[view]) for view in views}
    for view, length in lengths.items():
        if length == 0:
            raise FeatureError(f"{path}: no features for view '{view}'")
    if len(set(lengths.values())) > 1:
        raise FeatureError(f"{path}: views have different numbers of frames {lengths}")
    n_frames = lengths[views[0]] if views else 0
    if end < n_frames:  # the short last window: the first one to reach the track's end
        yield cut(n_frames)
