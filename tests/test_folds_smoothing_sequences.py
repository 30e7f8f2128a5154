import numpy as np
import polars as pl
import pytest

from pipeline.evaluation.folds import assign_folds
from pipeline.evaluation.smoothing import smooth
from pipeline.features.sequences import fill_missing, label_arrays, outputs_of, predictions_table
from pipeline.tasks.definitions import TASKS


def make_tracks(n_subjects: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for v in range(rng.integers(1, 4)):
            rows.append({"track": f"s{s}_v{v}", "subject": f"s{s}", "n_frames": int(rng.integers(50, 500))})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_group_subjects_and_balance_frames(seed):
    tracks = make_tracks(13, seed)
    folds = assign_folds(tracks, n_folds=5, seed=seed)
    assert folds.group_by("subject").agg(pl.col("fold").n_unique())["fold"].max() == 1
    assert sorted(folds["fold"].unique().to_list()) == [0, 1, 2, 3, 4]
    load = folds.group_by("fold").agg(pl.col("n_frames").sum())["n_frames"].to_numpy()
    assert (
        load.max() - load.min() <= tracks.group_by("subject").agg(pl.col("n_frames").sum())["n_frames"].max()
    )
    assert folds.equals(assign_folds(tracks, n_folds=5, seed=seed))


def test_folds_need_enough_subjects():
    with pytest.raises(ValueError, match="3 subjects cannot fill 5"):
        assign_folds(make_tracks(3), n_folds=5, seed=0)


def test_window_smoothing_is_a_centred_mean_and_keeps_length():
    values = np.zeros((21, 2), dtype=np.float32)
    values[10] = 5.0
    out = smooth(values, {"method": "window", "width": 5})
    assert out.shape == values.shape
    np.testing.assert_allclose(out[8:13, 0], 1.0, rtol=1e-6)
    assert out[7, 0] == 0 and out[13, 0] == 0


def test_gaussian_smoothing_preserves_mass_and_none_is_identity():
    values = np.zeros((101, 1), dtype=np.float32)
    values[50] = 1.0
    out = smooth(values, {"method": "gaussian", "sigma": 3.0})
    assert out.sum() == pytest.approx(1.0, rel=1e-4) and out[50, 0] < 0.2
    np.testing.assert_array_equal(smooth(values, {"method": "none"}), values)
    with pytest.raises(ValueError, match="unknown smoothing method"):
        smooth(values, {"method": "median"})


def test_fill_missing_takes_the_nearest_frame_with_a_face():
    features = np.arange(6, dtype=np.float32)[:, None] * 10
    has_face = np.array([False, True, False, False, False, True])
    filled = fill_missing(features, has_face)[:, 0]
    assert filled.tolist() == [10, 10, 10, 10, 50, 50]
    assert not fill_missing(features, np.zeros(6, bool)).any()


def test_predictions_table_round_trip():
    tasks = [TASKS["expr"], TASKS["va"]]
    outputs = {"expr": np.random.rand(7, 8), "va": np.random.rand(7, 2)}
    table = predictions_table("t", outputs, tasks)
    assert table.height == 7 and table["frame"].to_list() == list(range(7))
    np.testing.assert_allclose(outputs_of(table, TASKS["va"]), outputs["va"], rtol=1e-6)


def test_label_arrays_shapes():
    labels = pl.DataFrame(
        {
            "expr": [1, -1],
            **{c: [0, 1] for c in TASKS["au"].columns},
            "valence": [0.1, -5.0],
            "arousal": [0.2, -5.0],
        }
    )
    arrays = label_arrays(labels, list(TASKS.values()))
    assert arrays["expr"].tolist() == [1, -1]
    assert arrays["au"].shape == (2, 12) and arrays["va"].shape == (2, 2)
