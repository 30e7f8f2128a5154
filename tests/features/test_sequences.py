"""Per-track sequences: filling missing faces, named streams from the feature cache, labels, targets of
face crops and predictions tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import artifacts
from pipeline.faces.crops import gather_crops
from pipeline.features.cache import feature_table
from pipeline.features.sequences import (
    crop_targets,
    fill_missing,
    label_arrays,
    load_streams,
    load_track,
    outputs_of,
    predictions_table,
    targets_of,
    track_features,
)
from pipeline.tasks.definitions import TASKS, get_tasks


def test_fill_missing_takes_the_nearest_frame_with_a_face():
    features = np.arange(6, dtype=np.float32)[:, None] * 10
    has_face = np.array([False, True, False, False, False, True])
    filled = fill_missing(features, has_face)[:, 0]
    assert filled.tolist() == [10, 10, 10, 10, 50, 50]
    assert not fill_missing(features, np.zeros(6, bool)).any()


def test_track_features_offer_raw_deviation_or_both():
    features = np.array([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], dtype=np.float32)
    has_face = np.array([True, True, False])
    both = track_features(features, has_face, "both")
    assert both.shape == (3, 4) and both.dtype == np.float32
    np.testing.assert_allclose(both[:2, 2:], [[-1.0, -1.0], [1.0, 1.0]])  # mean over frames with a face
    np.testing.assert_allclose(track_features(features, has_face, "deviation"), both[:, 2:])
    np.testing.assert_allclose(track_features(features, has_face, "raw"), features)
    with pytest.raises(ValueError, match="track features must be one of"):
        track_features(features, has_face, "mean")


def test_predictions_table_round_trip():
    tasks = [TASKS["expr"], TASKS["va"]]
    outputs = {"expr": np.random.rand(7, 8), "va": np.random.rand(7, 2)}
    table = predictions_table("t", outputs, tasks)
    assert table.height == 7 and table["frame"].to_list() == list(range(7))
    np.testing.assert_allclose(outputs_of(table, TASKS["va"]), outputs["va"], rtol=1e-6)


def _labels(n: int) -> pl.DataFrame:
    """Frame labels of the three Aff-Wild2 tasks; the compound / mimicry columns are absent."""
    expr = np.arange(n) % 8
    expr[0] = -1
    va = np.linspace(-0.5, 0.5, n)
    return pl.DataFrame(
        {
            "frame": np.arange(n),
            "expr": expr,
            **{c: (np.arange(n) + i) % 2 for i, c in enumerate(TASKS["au"].columns)},
            "valence": va,
            "arousal": -va,
        }
    )


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
    assert arrays["expr"].tolist() == [1, -1] and arrays["expr"].dtype == np.int64
    assert arrays["au"].shape == (2, 12) and arrays["va"].shape == (2, 2)
    assert arrays["va"].dtype == np.float32
    # A task whose columns the table lacks is all invalid, in its kind's shape.
    assert arrays["ce"].tolist() == [-1, -1]
    assert arrays["emi"].shape == (2, 6) and (arrays["emi"] == TASKS["emi"].invalid).all()
    np.testing.assert_array_equal(targets_of(labels, TASKS["va"]), arrays["va"])


def _write_features(path, n_frames: int, frames: np.ndarray, dims: dict[str, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    embeddings = {view: rng.normal(size=(len(frames), dim)).astype(np.float32) for view, dim in dims.items()}
    tables = [feature_table(n_frames, view, frames, values) for view, values in embeddings.items()]
    pq.write_table(pa.concat_tables(tables), path)
    return embeddings


def test_load_streams_and_track_align_views_and_labels(tmp_path):
    frames = np.array([1, 2, 4])
    # One encoder embeds every view, so the views share one width (the cache's schema needs it).
    embeddings = _write_features(tmp_path / "t.parquet", 6, frames, {"face": 3, "eye_mouth": 3})
    streams, masks = load_streams(tmp_path / "t.parquet", ["eye_mouth", "face"])
    assert streams["face"].shape == (6, 3) and streams["eye_mouth"].shape == (6, 3)
    assert not np.array_equal(streams["face"], streams["eye_mouth"])
    assert masks["face"].tolist() == [False, True, True, False, True, False]
    stored = embeddings["face"].astype(np.float16).astype(np.float32)  # the cache stores float16
    np.testing.assert_array_equal(streams["face"][frames], stored)
    np.testing.assert_array_equal(streams["face"][0], stored[0])  # filled from frame 1

    _labels(6).write_parquet(tmp_path / "labels.parquet")
    tasks = get_tasks(["expr", "au", "va"])
    sequence = load_track("t", tmp_path / "t.parquet", tmp_path / "labels.parquet", ["face"], tasks, "both")
    assert sequence.n_frames == 6 and set(sequence.streams) == {"face"}
    assert sequence.streams["face"].shape == (6, 6)  # features + deviation from the track mean
    assert sequence.targets["expr"][0] == -1 and sequence.targets["au"].shape == (6, 12)

    _labels(5).write_parquet(tmp_path / "short.parquet")
    with pytest.raises(ValueError, match="6 feature rows"):
        load_track("t", tmp_path / "t.parquet", tmp_path / "short.parquet", ["face"], tasks, "raw")


def test_crop_targets_follow_the_crop_index(tmp_path):
    faces_dir, frames_dir = tmp_path / "faces", tmp_path / "frames"
    for track, n_frames, with_face in (("a", 8, [0, 3, 5, 6]), ("b", 4, [1, 2])):
        table = pl.DataFrame(
            {"frame": np.arange(n_frames), "has_face": np.isin(np.arange(n_frames), with_face)}
        )
        artifacts.face_table(faces_dir, track).parent.mkdir(parents=True)
        table.write_parquet(artifacts.face_table(faces_dir, track))
        # Each crop's pixels hold its frame number, so crops and labels can be matched.
        crops = np.broadcast_to(np.array(with_face, np.uint8)[:, None, None, None], (len(with_face), 4, 4, 3))
        np.save(artifacts.face_crops(faces_dir, track, "face"), np.ascontiguousarray(crops))
        artifacts.labels_table(frames_dir, track).parent.mkdir(parents=True, exist_ok=True)
        _labels(n_frames).write_parquet(artifacts.labels_table(frames_dir, track))

    crops, index = gather_crops(faces_dir, ["a", "b"], "face", stride=2)
    assert index["track"].to_list() == ["a", "a", "b"] and index["frame"].to_list() == [0, 5, 1]
    assert crops[:, 0, 0, 0].tolist() == index["frame"].to_list()
    targets = crop_targets(index, frames_dir, get_tasks(["expr", "va"]))
    assert targets["expr"].tolist() == [-1, 5, 1]
    expected = [np.linspace(-0.5, 0.5, 8)[0], np.linspace(-0.5, 0.5, 8)[5], np.linspace(-0.5, 0.5, 4)[1]]
    np.testing.assert_allclose(targets["va"][:, 0], expected, rtol=1e-6)
