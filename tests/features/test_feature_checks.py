"""Features, predictions and task sets are checked where they cross a stage boundary: the error names the
file, the view or track, and the frame."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import artifacts
from pipeline.evaluation.report import summarise_cv
from pipeline.evaluation.scoring import read_predictions
from pipeline.features.cache import feature_table
from pipeline.features.sequences import (
    FEATURE_LIMIT,
    FeatureError,
    TrackSequence,
    check_widths,
    load_streams,
    predictions_table,
    present_tasks,
)
from pipeline.tasks.definitions import get_tasks


def write(path, n_frames=6, frames=(1, 2, 4), dim=3, view="face", value=None) -> np.ndarray:
    frames = np.asarray(frames, dtype=np.int64)
    embeddings = np.random.default_rng(0).normal(size=(len(frames), dim)).astype(np.float32)
    if value is not None:
        embeddings[1, 2] = value  # frame frames[1]
    pq.write_table(feature_table(n_frames, view, frames, embeddings), path)
    return embeddings


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1.0e30, 10 * FEATURE_LIMIT])
def test_non_finite_or_huge_features_name_file_view_and_frame(tmp_path, value):
    path = tmp_path / "video7.parquet"
    write(path, value=value)
    with pytest.raises(FeatureError, match=r"video7\.parquet: view 'face', frame 2: embedding\[2\]"):
        load_streams(path, ["face"])


def test_a_large_but_sane_value_passes(tmp_path):
    write(tmp_path / "t.parquet", value=0.5 * FEATURE_LIMIT)
    streams, _ = load_streams(tmp_path / "t.parquet", ["face"])
    assert streams["face"][2, 2] == np.float32(0.5 * FEATURE_LIMIT)


def test_schema_duplicates_and_missing_views_are_named(tmp_path):
    path = tmp_path / "t.parquet"
    table = feature_table(4, "face", np.array([0, 1]), np.ones((2, 3), np.float32))
    pq.write_table(table.drop_columns(["has_face"]), path)
    with pytest.raises(FeatureError, match=r"t\.parquet: missing column\(s\) \['has_face'\]"):
        load_streams(path, ["face"])
    pq.write_table(pa.concat_tables([table, table]), path)  # every frame twice
    with pytest.raises(FeatureError, match=r"one row per frame 0\.\.7; row 1 holds frame 0"):
        load_streams(path, ["face"])
    pq.write_table(table, path)
    with pytest.raises(FeatureError, match=r"no features for view 'eye_mouth' \(has: \['face'\]\)"):
        load_streams(path, ["eye_mouth"])


def test_a_wrong_feature_width_names_both_files(tmp_path):
    write(tmp_path / "a.parquet", dim=3)
    write(tmp_path / "b.parquet", dim=5)
    sequences = []
    for name in ("a", "b"):
        streams, masks = load_streams(tmp_path / f"{name}.parquet", ["face"])
        sequences.append(TrackSequence(name, streams, masks))
    paths = {name: tmp_path / f"{name}.parquet" for name in ("a", "b")}
    with pytest.raises(FeatureError, match=r"b\.parquet: stream 'face' has width 5, but .*a\.parquet has 3"):
        check_widths(sequences, paths)


def test_faceless_tracks_are_flagged_and_their_frames_say_so(tmp_path):
    write(tmp_path / "none.parquet", frames=[])  # a track whose video never shows a face
    streams, masks = load_streams(tmp_path / "none.parquet", ["face"])
    faceless = TrackSequence("none", streams, masks)
    assert faceless.faceless and set(faceless.sources()) == {"prior"}
    write(tmp_path / "some.parquet", frames=[1, 2, 4])
    streams, masks = load_streams(tmp_path / "some.parquet", ["face"])
    partial = TrackSequence("some", streams, masks)
    assert not partial.faceless
    assert partial.sources().tolist() == ["filled", "face", "face", "filled", "face", "filled"]


def test_predictions_with_nan_are_named_on_read(tmp_path):
    tasks = get_tasks(["va"])
    table = predictions_table("video3", {"va": np.array([[0.1, 0.2], [np.nan, 0.0]], np.float32)}, tasks)
    table.write_parquet(tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p\.parquet: va_0 is not finite for track video3 frame 1"):
        read_predictions(tmp_path / "p.parquet", tasks)
    with pytest.raises(ValueError, match=r"no column 'expr_0' for task expr"):
        read_predictions(tmp_path / "p.parquet", get_tasks(["expr"]))


def test_present_tasks_skip_tasks_without_labels_with_a_note(tmp_path, capsys):
    tracks = pl.DataFrame({"track": ["a", "b"], "tasks": ["expr", "au,expr"]})
    tracks.write_parquet(artifacts.tracks_table(tmp_path))
    assert [t.name for t in present_tasks(tmp_path, ["expr", "au", "va"], "train.tasks")] == ["expr", "au"]
    assert "train.tasks ['va']: no labels under data.root" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"evaluate.tasks \['va'\]: none of these tasks has labels"):
        present_tasks(tmp_path, ["va"], "evaluate.tasks")


def test_a_task_missing_from_some_folds_fails_loudly():
    tasks = get_tasks(["expr", "va"])
    scores = {"f1": 0.3, "f1_unsmoothed": 0.3, "baseline": 0.1}
    va = {"ccc": 0.2, "ccc_unsmoothed": 0.2, "baseline": 0.0}
    complete = {0: {f"fold_{k}": {"expr": scores, "va": va} for k in range(3)}}
    summary = summarise_cv(complete, tasks)
    assert summary["expr"]["folds"] == 3 and summary["va"]["folds"] == 3
    gap = {0: {"fold_0": {"expr": scores, "va": va}, "fold_1": {"expr": scores}, "fold_2": {"expr": scores}}}
    with pytest.raises(ValueError, match=r"task va: runs \['fold_1', 'fold_2'\] have no labelled va test"):
        summarise_cv(gap, tasks)
