"""Temporal smoothing of per-frame outputs: specs, filters and track-by-track smoothing of tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.config import SmoothingSpec
from pipeline.evaluation.smoothing import gaussian, smooth, smooth_table
from pipeline.features.sequences import outputs_of, predictions_table
from pipeline.tasks.definitions import TASKS


def test_window_smoothing_is_a_centred_mean_and_keeps_length():
    values = np.zeros((21, 2), dtype=np.float32)
    values[10] = 5.0
    out = smooth(values, "window:5")
    assert out.shape == values.shape
    np.testing.assert_allclose(out[8:13, 0], 1.0, rtol=1e-6)
    assert out[7, 0] == 0 and out[13, 0] == 0
    np.testing.assert_array_equal(smooth(values, SmoothingSpec("window", 5)), out)
    np.testing.assert_array_equal(smooth(values, "window:1"), values)  # width 1 = off


def test_gaussian_smoothing_preserves_mass_and_none_is_identity():
    values = np.zeros((101, 1), dtype=np.float32)
    values[50] = 1.0
    out = smooth(values, "gaussian:3.0")
    assert out.sum() == pytest.approx(1.0, rel=1e-4) and out[50, 0] < 0.2
    np.testing.assert_array_equal(smooth(values, "none"), values)


@pytest.mark.parametrize(
    "text", ["median:3", "window", "window:2.5", "window:0", "gaussian:0", "gaussian:-1"]
)
def test_bad_specs_are_rejected(text):
    with pytest.raises(ValueError, match="expected none|whole number|sigma must be > 0"):
        smooth(np.zeros((5, 1), np.float32), text)


def test_gaussian_needs_a_positive_sigma():
    with pytest.raises(ValueError, match="sigma > 0"):
        gaussian(np.zeros((5, 1), np.float32), 0.0)


def test_spec_text_round_trip():
    for text in ("none", "window:25", "gaussian:2.0"):
        assert str(SmoothingSpec.parse(text)) == text


def test_smooth_table_keeps_tracks_apart():
    task = TASKS["va"]
    # Two tracks, each constant: smoothing inside a track keeps it constant, so nothing leaks across.
    first = predictions_table("a", {"va": np.full((10, 2), 0.5)}, [task])
    second = predictions_table("b", {"va": np.full((7, 2), -0.5)}, [task])
    table = pl.concat([second, first])  # out of order on purpose
    out = smooth_table(table, task, SmoothingSpec.parse("window:5"))
    assert out.height == table.height
    for track, value in (("a", 0.5), ("b", -0.5)):
        rows = out.filter(pl.col("track") == track)
        assert rows["frame"].to_list() == sorted(rows["frame"].to_list())
        np.testing.assert_allclose(outputs_of(rows, task), value, rtol=1e-6)
