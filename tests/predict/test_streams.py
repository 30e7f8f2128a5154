"""`IndexedStream`: the sequence model's inputs read window by window from the measured rows equal the
[T, D] streams built whole (`fill_missing` + `track_features`), bit for bit, in memory and from a file."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.faces.storage import RowWriter
from pipeline.features.cache import as_stored
from pipeline.features.sequences import TRACK_FEATURES, fill_missing, track_features
from pipeline.inference.sequences import windows
from pipeline.predict import streams as streams_module
from pipeline.predict.streams import IndexedStream, face_rows, row_mean

CASES = [(12, [0, 3, 4, 11]), (9, [5]), (6, list(range(6))), (7, []), (40, [2, 3, 17, 30, 31, 32])]


def stored(values: np.ndarray, where: str, tmp_path) -> np.ndarray:
    """The rows in memory, or written and memory-mapped as `Predictor._encode` leaves them."""
    if where == "memory":
        return values
    writer = RowWriter((values.shape[1],), np.float32, tmp_path / "features.npy")
    writer.extend(values)
    return writer.finish()


@pytest.mark.parametrize("where", ["memory", "file"])
@pytest.mark.parametrize("mode", TRACK_FEATURES)
def test_windows_equal_the_stream_built_whole(mode, where, tmp_path, monkeypatch):
    monkeypatch.setattr(streams_module, "MEAN_BLOCK", 2)  # the mean over several blocks
    rng = np.random.default_rng(4)
    for n_frames, frames in CASES:
        frames = np.array(frames, np.int64)
        values = as_stored(rng.standard_normal((len(frames), 5)).astype(np.float32) * 100 + 7)
        full, has_face = np.zeros((n_frames, 5), np.float32), np.zeros(n_frames, bool)
        full[frames], has_face[frames] = values, True
        expected = track_features(fill_missing(full, has_face), has_face, mode)
        rows = stored(values, where, tmp_path)
        stream = IndexedStream(rows, face_rows(has_face), mode, row_mean(rows))
        assert len(stream) == n_frames and stream.shape == expected.shape
        for start, end in [(0, n_frames), *windows(n_frames, 4, 2)]:
            window = stream[start:end]
            assert window.dtype == np.float32
            np.testing.assert_array_equal(window, expected[start:end])


def test_row_mean_is_numpys_mean_bit_for_bit(tmp_path, monkeypatch):
    """Rows added in order in float32, as numpy's mean(axis=0) adds them; a mask picks the rows (the
    audio stream's mean is over covered frames); no row gives zeros."""
    monkeypatch.setattr(streams_module, "MEAN_BLOCK", 7)
    values = (np.random.default_rng(5).standard_normal((1000, 9)) * 50 + 3).astype(np.float32)
    mask = np.random.default_rng(6).random(1000) < 0.6
    for rows in (values, stored(values, "file", tmp_path)):
        np.testing.assert_array_equal(row_mean(rows), values.mean(axis=0))
        np.testing.assert_array_equal(row_mean(rows, mask), values[mask].mean(axis=0))
    np.testing.assert_array_equal(row_mean(values, np.zeros(1000, bool)), np.zeros(9, np.float32))


def test_a_stream_is_read_by_windows_only():
    stream = IndexedStream(np.zeros((3, 2), np.float32), np.array([0, 1, 2]), "raw", np.zeros(2))
    with pytest.raises(TypeError, match="by windows"):
        stream[1]
    with pytest.raises(ValueError, match="track features"):
        IndexedStream(np.zeros((3, 2), np.float32), np.array([0, 1, 2]), "mean", np.zeros(2))
