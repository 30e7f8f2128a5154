"""The feature store: float16 zstd Parquet in bounded row groups, extraction batched across tracks (same
embeddings as per track), resume keys, pooling, and the streaming window reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import pipeline.flows
from pipeline import artifacts, resume
from pipeline.features.cache import (
    ROW_GROUP_ROWS,
    CropBatch,
    TrackJob,
    crop_stream,
    extract_tracks,
    feature_schema,
    feature_table,
    load_encoder,
    pool_features,
    shard_jobs,
    track_key,
    track_table,
    write_feature_table,
)
from pipeline.features.sequences import FeatureError, load_streams
from pipeline.features.windows import iter_windows
from pipeline.flows import fan_out
from pipeline.inference.images import to_tensor_batch
from pipeline.models.encoders import create_encoder, encoder_kwargs, feature_dim, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
VIEWS = ["eye_mouth", "face"]
# track -> (timeline frames, frames with a face): crop counts 5, 0, 11, 7 so batches of 4 cross tracks
TRACKS = {
    "a": (8, [0, 1, 2, 5, 7]),
    "ghost": (6, []),
    "b": (14, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 13]),
    "c": (9, [1, 2, 3, 4, 5, 6, 7]),
}


def write_faces(faces_dir, tracks=TRACKS, views=VIEWS, size=48, seed=0) -> None:
    """A faces folder in the faces stage's layout: <track>/table.parquet and <track>/<view>.npy."""
    rng = np.random.default_rng(seed)
    for track, (n_frames, with_face) in tracks.items():
        table = artifacts.face_table(faces_dir, track)
        table.parent.mkdir(parents=True)
        pl.DataFrame(
            {"frame": np.arange(n_frames), "has_face": np.isin(np.arange(n_frames), with_face)}
        ).write_parquet(table)
        for view in views:
            crops = rng.integers(0, 256, size=(len(with_face), size, size, 3), dtype=np.uint8)
            np.save(artifacts.face_crops(faces_dir, track, view), crops)


def tiny_checkpoint(path, seed: int) -> None:
    """A random one-block encoder on 32 px inputs, saved as our checkpoints are."""
    torch.manual_seed(seed)
    kwargs = encoder_kwargs("vit_tiny_80", depth=1, img_size=32)
    encoder = create_encoder("vit_tiny_80", **kwargs)
    save_checkpoint({"model": encoder.state_dict(), "encoder": "vit_tiny_80", "encoder_kwargs": kwargs}, path)


@pytest.fixture
def encoders(tmp_path):
    paths = {view: tmp_path / "finetune" / view / "encoder.pt" for view in VIEWS}
    for seed, path in enumerate(paths.values()):
        tiny_checkpoint(path, seed)
    return {view: load_encoder(path, "cpu") for view, path in paths.items()}


def extract(faces_dir, out_dir, encoders, tracks, batch_size, pool="mean") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [TrackJob(track, TRACKS[track][0], f"key-{track}") for track in tracks]
    extract_tracks(jobs, faces_dir, encoders, out_dir, pool=pool, batch_size=batch_size)


def test_the_schema_is_float16_zstd_in_bounded_row_groups(tmp_path):
    n_frames, dim = ROW_GROUP_ROWS + 100, 8  # two views: more than two row groups
    frames = np.arange(0, n_frames, 2)
    rng = np.random.default_rng(0)
    embeddings = {view: (frames, rng.normal(size=(len(frames), dim))) for view in VIEWS}
    path = tmp_path / "t.parquet"
    write_feature_table(track_table(n_frames, embeddings), path, "the key")

    assert resume.parquet_key(path) == "the key"
    assert pq.read_schema(path).remove_metadata().equals(feature_schema(dim))
    assert feature_schema(dim).field("embedding").type.value_type == pa.float16()
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_rows == 2 * n_frames and metadata.num_row_groups == 3
    for group in range(metadata.num_row_groups):
        assert metadata.row_group(group).num_rows <= ROW_GROUP_ROWS
        for column in range(metadata.num_columns):
            assert metadata.row_group(group).column(column).compression == "ZSTD"
    # Frame-major rows, so a window of frames is a run of rows.
    table = pq.read_table(path, columns=["frame", "view"])
    assert table["frame"].to_pylist()[:4] == [0, 0, 1, 1]
    assert table["view"].to_pylist()[:4] == VIEWS * 2


def test_values_round_trip_as_float32_within_float16_precision(tmp_path):
    frames = np.array([1, 2, 4])
    values = np.random.default_rng(0).normal(scale=3.0, size=(3, 5)).astype(np.float32)
    pq.write_table(feature_table(6, "face", frames, values), tmp_path / "t.parquet")
    streams, masks = load_streams(tmp_path / "t.parquet", ["face"])
    assert streams["face"].dtype == np.float32 and masks["face"].tolist() == [0, 1, 1, 0, 1, 0]
    np.testing.assert_allclose(streams["face"][frames], values, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(streams["face"][frames], values.astype(np.float16).astype(np.float32))
    assert pq.read_table(tmp_path / "t.parquet")["embedding"].null_count == 3


def test_batches_span_tracks_and_only_the_last_is_short(tmp_path):
    write_faces(tmp_path / "faces")
    items = list(crop_stream(tmp_path / "faces", list(TRACKS), {"face": (32, 32)}, 4, "cpu"))
    batches = [item for item in items if isinstance(item, CropBatch)]
    assert [len(b.images) for b in batches] == [4, 4, 4, 4, 4, 3]  # 23 crops
    assert batches[1].parts == [(0, 1), (2, 3)]  # the end of a, then b (ghost has no crops)
    assert all(tuple(b.images.shape[1:]) == (3, 32, 32) for b in batches)


@pytest.mark.usefixtures("one_thread")
def test_cross_track_batching_gives_the_per_track_embeddings(tmp_path, encoders):
    faces = tmp_path / "faces"
    write_faces(faces)
    extract(faces, tmp_path / "together", encoders, list(TRACKS), batch_size=4)
    for track in TRACKS:  # the old way: one track at a time, in one batch
        extract(faces, tmp_path / "alone", encoders, [track], batch_size=64)

    for track, (n_frames, with_face) in TRACKS.items():
        together = pq.read_table(artifacts.feature_table(tmp_path / "together", track))
        alone = pq.read_table(artifacts.feature_table(tmp_path / "alone", track))
        assert together.num_rows == n_frames * len(VIEWS)
        assert resume.parquet_key(artifacts.feature_table(tmp_path / "together", track)) == f"key-{track}"
        streams, masks = load_streams(artifacts.feature_table(tmp_path / "together", track), VIEWS)
        reference, _ = load_streams(artifacts.feature_table(tmp_path / "alone", track), VIEWS)
        for view in VIEWS:
            assert np.flatnonzero(masks[view]).tolist() == with_face
            np.testing.assert_allclose(streams[view], reference[view], rtol=1e-3, atol=1e-3)
            if with_face:  # and the encoder's own output on the track's crops
                crops = np.load(artifacts.face_crops(faces, track, view))
                with torch.inference_mode():
                    direct = encoders[view](to_tensor_batch(crops, "cpu", size=(32, 32))).numpy()
                np.testing.assert_allclose(streams[view][with_face], direct, rtol=1e-2, atol=2e-3)
        assert together.schema.remove_metadata().equals(alone.schema.remove_metadata())
    # Each view has its own encoder.
    a, _ = load_streams(artifacts.feature_table(tmp_path / "together", "a"), VIEWS)
    assert not np.allclose(a["face"], a["eye_mouth"], atol=1e-2)


def test_resume_keys_follow_pool_encoders_and_faces():
    base = dict(encoders={"eye_mouth": "e1"}, faces_key="f", n_frames=10, pool="mean", code="c")
    key = track_key(**base)
    assert track_key(**base) == key
    changed = [
        {"pool": "cls"},
        {"encoders": {"eye_mouth": "e2"}},
        {"encoders": {"eye_mouth": "e1", "face": "e3"}},
        {"faces_key": "g"},
        {"n_frames": 11},
        {"code": "d"},
    ]
    keys = {track_key(**{**base, **change}) for change in changed}
    assert key not in keys and len(keys) == len(changed)
    two = {"encoders": {"face": "e3", "eye_mouth": "e1"}}  # the view order is the rows' order
    assert track_key(**{**base, **two}) != track_key(**{**base, **changed[2]})


@pytest.mark.usefixtures("one_thread")
def test_cls_pooling_is_the_normed_class_token_and_differs_from_mean(tmp_path, encoders):
    encoder = encoders["face"]
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        tokens = encoder.forward_features(x)  # after the final norm
        cls, mean = pool_features(encoder, x, "cls"), pool_features(encoder, x, "mean")
    assert cls.shape == mean.shape == (3, feature_dim(encoder))
    torch.testing.assert_close(cls, tokens[:, 0])
    torch.testing.assert_close(mean, tokens[:, encoder.num_prefix_tokens :].mean(dim=1))
    assert not torch.allclose(cls, mean, atol=1e-3)
    with pytest.raises(ValueError, match="pool must be one of"):
        pool_features(encoder, x, "max")

    write_faces(tmp_path / "faces", {"a": TRACKS["a"]})
    extract(tmp_path / "faces", tmp_path / "mean", encoders, ["a"], 4, pool="mean")
    extract(tmp_path / "faces", tmp_path / "cls", encoders, ["a"], 4, pool="cls")
    m, _ = load_streams(artifacts.feature_table(tmp_path / "mean", "a"), ["face"])
    c, _ = load_streams(artifacts.feature_table(tmp_path / "cls", "a"), ["face"])
    assert not np.allclose(m["face"], c["face"], atol=1e-2)


def full_arrays(path, view: str) -> tuple[np.ndarray, np.ndarray]:
    """[T, D] float32 with zeros without a face, and has_face [T], read all at once."""
    table = pl.read_parquet(path).filter(pl.col("view") == view).sort("frame")
    mask = table["has_face"].to_numpy()
    values = table["embedding"].to_numpy().astype(np.float32)
    values[~mask] = 0.0
    return values, mask


def write_track(path, n_frames: int, dim: int = 6, row_group_size: int = ROW_GROUP_ROWS) -> None:
    rng = np.random.default_rng(1)
    embeddings = {}
    for view in VIEWS:
        frames = np.flatnonzero(rng.random(n_frames) < 0.7)
        embeddings[view] = (frames, rng.normal(size=(len(frames), dim)))
    pq.write_table(track_table(n_frames, embeddings), path, row_group_size=row_group_size)


@pytest.mark.parametrize(
    ("n_frames", "window", "stride"), [(50, 16, 8), (50, 10, 10), (48, 16, 16), (7, 16, 4)]
)
def test_windows_equal_slices_of_the_whole_track(tmp_path, n_frames, window, stride):
    path = tmp_path / "t.parquet"
    write_track(path, n_frames, row_group_size=10)
    full = {view: full_arrays(path, view) for view in VIEWS}
    starts = []
    for start, values, masks in iter_windows(path, VIEWS, window, stride, batch_rows=7):
        stop = min(start + window, n_frames)
        for view in VIEWS:
            assert values[view].dtype == np.float32
            np.testing.assert_array_equal(values[view], full[view][0][start:stop])
            np.testing.assert_array_equal(masks[view], full[view][1][start:stop])
        starts.append(start)
    # Starts every `stride`; the last window is the first to reach the end, shorter if need be.
    expected = list(range(0, n_frames, stride))
    expected = expected[: next(i for i, s in enumerate(expected) if s + window >= n_frames) + 1]
    assert starts == expected


def test_windows_read_the_file_lazily(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_track(path, 1000, row_group_size=100)  # 2000 rows, 20 row groups
    read = []
    original = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            read.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    windows = iter_windows(path, VIEWS, 32, 16, batch_rows=100)
    next(windows)
    assert sum(read) == 100  # the first window (64 rows) needed one batch of 100 rows out of 2000
    assert sum(1 for _ in windows) + 1 == 62  # starts 0, 16, ..., 976 (the first to reach frame 999)
    assert sum(read) == 2000


def test_windows_name_a_gap_and_a_missing_view(tmp_path):
    table = feature_table(10, "face", np.arange(10), np.ones((10, 3), np.float32))
    pq.write_table(table.filter(pc.not_equal(table["frame"], 4)), tmp_path / "gap.parquet")
    with pytest.raises(FeatureError, match=r"gap\.parquet: view 'face' .* frame 4 is followed by frame 5"):
        list(iter_windows(tmp_path / "gap.parquet", ["face"], 4, 2))
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(FeatureError, match=r"no features for view 'eye_mouth'"):
        list(iter_windows(tmp_path / "t.parquet", ["face", "eye_mouth"], 4, 2))


def stage_inputs(tmp_path):
    """Faces, frames, splits, one view's encoder and params for the features stage on TRACKS (run fold_0);
    returns the stage's argv and its params."""
    faces, frames, splits, out = (tmp_path / name for name in ("faces", "frames", "splits", "features"))
    write_faces(faces, views=["eye_mouth"])
    for path in (frames, splits):
        path.mkdir()
    pl.DataFrame({"track": list(TRACKS), "n_frames": [n for n, _ in TRACKS.values()]}).write_parquet(
        artifacts.tracks_table(frames)
    )
    roles = ["train", "train", "tune", "test"]
    pl.DataFrame({"run": ["fold_0"] * 4, "track": list(TRACKS), "role": roles}).write_parquet(
        artifacts.roles_table(splits)
    )
    tiny_checkpoint(artifacts.view_encoder(tmp_path / "finetune", "eye_mouth"), 0)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["features"] |= {"views": ["eye_mouth"], "pool": "mean", "batch_size": 4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = [
        *("--run", "fold_0", "--faces", str(faces), "--frames", str(frames), "--splits", str(splits)),
        *("--encoder", str(tmp_path / "finetune"), "--out", str(out)),
        *("--params", str(tmp_path / "params.yaml")),
    ]
    return argv, params


@pytest.mark.usefixtures("one_thread")
def test_the_stage_resumes_and_reextracts_when_the_pool_changes(tmp_path, capsys):
    from pipeline.config import load_config
    from stages.features import main

    argv, params = stage_inputs(tmp_path)
    out = tmp_path / "features"
    load_config(tmp_path / "params.yaml")  # still a valid config
    main(argv)
    assert "0 tracks reused, 4 extracted" in capsys.readouterr().out
    first = {t: artifacts.feature_table(out, t).read_bytes() for t in TRACKS}
    main(argv)
    assert "4 tracks reused, 0 extracted" in capsys.readouterr().out
    assert {t: artifacts.feature_table(out, t).read_bytes() for t in TRACKS} == first
    params["features"]["pool"] = "cls"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    main(argv)
    assert "0 tracks reused, 4 extracted" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_with_several_gpus_each_extracts_a_shard_of_the_tracks(tmp_path, monkeypatch, capsys):
    """Two GPUs (ids on this CPU machine: the same scheduling code, on the CPU): the tracks are split into
    two shards of about equal frames, each extracted by a job process of its own, into the same tables."""
    from stages.features import main

    argv, _ = stage_inputs(tmp_path)
    out = tmp_path / "features"
    monkeypatch.setenv("AFFECTFLOW_GPUS", "")
    main(argv)
    one = {t: load_streams(artifacts.feature_table(out, t), ["eye_mouth"]) for t in TRACKS}
    keys = {t: resume.parquet_key(artifacts.feature_table(out, t)) for t in TRACKS}
    for t in TRACKS:
        artifacts.feature_table(out, t).unlink()
    monkeypatch.setenv("AFFECTFLOW_GPUS", "3,5")
    monkeypatch.setenv("AFFECTFLOW_THREADS", "1")
    shards = []

    def counted_fan_out(function, jobs, **kwargs):
        shards.extend(sorted(job.track for job in shard["jobs"]) for shard in jobs)
        return fan_out(function, jobs, **kwargs)

    monkeypatch.setattr(pipeline.flows, "fan_out", counted_fan_out)
    main(argv)
    assert "0 tracks reused, 4 extracted" in capsys.readouterr().out
    assert sorted(shards) == [["a", "c"], ["b", "ghost"]]  # by frames: b 14 + ghost 6, c 9 + a 8
    for t in TRACKS:
        streams, masks = load_streams(artifacts.feature_table(out, t), ["eye_mouth"])
        np.testing.assert_array_equal(masks["eye_mouth"], one[t][1]["eye_mouth"])
        np.testing.assert_allclose(streams["eye_mouth"], one[t][0]["eye_mouth"], rtol=1e-3, atol=1e-3)
        assert resume.parquet_key(artifacts.feature_table(out, t)) == keys[t]


def test_shards_balance_frames():
    jobs = [TrackJob(name, n, "") for name, n in [("a", 10), ("b", 9), ("c", 5), ("d", 4), ("e", 1)]]
    shards = shard_jobs(jobs, 2)
    assert [[job.track for job in shard] for shard in shards] == [["a", "d", "e"], ["b", "c"]]  # 15 / 14
    assert shard_jobs(jobs[:1], 4) == [[jobs[0]]]  # never an empty shard
