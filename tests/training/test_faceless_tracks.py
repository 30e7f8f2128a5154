"""A track whose video never shows a face is kept out of training, named, and still gets a prediction on
every frame (the run's training prior), so metrics and submissions stay complete."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from polars.testing import assert_frame_equal

import pipeline.flows
from pipeline import artifacts
from pipeline.features.cache import feature_table
from pipeline.flows import fan_out
from pipeline.models.encoders import load_checkpoint
from pipeline.tasks.definitions import TASKS
from pipeline.training.cv import train_run

N_FRAMES = 40


def labels(n: int, offset: int) -> pl.DataFrame:
    expr = (np.arange(n) // 5 + offset) % 3  # classes 0-2 only
    va = np.sin(np.arange(n) / 5 + offset).astype(np.float32) / 2
    return pl.DataFrame(
        {
            "frame": np.arange(n, dtype=np.int32),
            "expr": expr,
            **{c: (np.arange(n) + i + offset) % 2 for i, c in enumerate(TASKS["au"].columns)},
            "valence": va,
            "arousal": -va,
        }
    )


def write_run(tmp_path, roles: dict[str, str]):
    """Toy features, labels and roles of run fold_0 (tracks named ghost* never show a face)."""
    features, frames, splits = tmp_path / "features", tmp_path / "frames", tmp_path / "splits"
    for folder in (features, frames / "labels", splits):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, track in enumerate(roles):
        with_face = np.array([], np.int64) if track.startswith("ghost") else np.arange(0, N_FRAMES)
        embeddings = rng.normal(size=(len(with_face), 4)).astype(np.float32)
        pq.write_table(
            feature_table(N_FRAMES, "eye_mouth", with_face, embeddings),
            artifacts.feature_table(features, track),
        )
        labels(N_FRAMES, i).write_parquet(artifacts.labels_table(frames, track))
    pl.DataFrame({"track": list(roles), "tasks": ["au,expr,va"] * len(roles)}).write_parquet(
        artifacts.tracks_table(frames)
    )
    pl.DataFrame(
        {"run": ["fold_0"] * len(roles), "track": list(roles), "role": list(roles.values())}
    ).write_parquet(artifacts.roles_table(splits))
    return features, frames, splits


@pytest.mark.usefixtures("one_thread")
def test_a_faceless_track_is_named_excluded_and_gets_the_training_prior(tmp_path, tiny_train_config, capsys):
    roles = {"a": "train", "b": "train", "ghost_train": "train", "c": "tune", "ghost": "test", "d": "test"}
    features, frames, splits = write_run(tmp_path, roles)
    config = dataclasses.replace(tiny_train_config, views=("eye_mouth",), epochs=1, seeds=(0,))

    predictions = train_run("fold_0", features, frames, splits, tmp_path / "out", config)

    out = capsys.readouterr().out
    assert "never show a face, kept out of training: ['ghost_train']" in out
    assert "test track ghost never shows a face: every frame gets the training prior" in out
    ghost = predictions.filter(pl.col("track") == "ghost")
    assert ghost.height == N_FRAMES and set(ghost["source"]) == {"prior"}
    assert set(predictions.filter(pl.col("track") == "d")["source"]) == {"face"}
    # The prior is what the training tracks a and b say (ghost_train's labels are not used).
    train_labels = pl.concat([labels(N_FRAMES, 0), labels(N_FRAMES, 1)])
    expected_expr = np.bincount(train_labels["expr"].to_numpy(), minlength=8) / train_labels.height
    np.testing.assert_allclose(
        ghost.select([f"expr_{i}" for i in range(8)]).to_numpy()[0], expected_expr, atol=1e-6
    )
    np.testing.assert_allclose(ghost["va_0"].to_numpy(), train_labels["valence"].mean(), atol=1e-6)
    checkpoint = load_checkpoint(artifacts.sequence_model(tmp_path / "out", 0))
    assert checkpoint["config"]["num_tracks"] == 2


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_seeds_on_several_gpus_train_the_same_models(tmp_path, tiny_train_config, monkeypatch):
    """With two GPUs the seeds train at once, one per GPU, in job processes of their own (GPU ids on this CPU
    machine: the same scheduling code, on the CPU); the models and predictions are those of the seeds
    trained one after another in the stage."""
    roles = {"a": "train", "b": "train", "c": "tune", "d": "test"}
    features, frames, splits = write_run(tmp_path, roles)
    config = dataclasses.replace(tiny_train_config, views=("eye_mouth",), epochs=2, seeds=(0, 1))
    monkeypatch.setenv("AFFECTFLOW_THREADS", "1")  # the jobs' torch threads, as this process's (one_thread)
    monkeypatch.setenv("AFFECTFLOW_GPUS", "")
    one_by_one = train_run("fold_0", features, frames, splits, tmp_path / "one_by_one", config)
    monkeypatch.setenv("AFFECTFLOW_GPUS", "3,5")
    fan_outs = []

    def counted_fan_out(*args, **kwargs):
        fan_outs.append(kwargs["labels"])
        return fan_out(*args, **kwargs)

    monkeypatch.setattr(pipeline.flows, "fan_out", counted_fan_out)
    parallel = train_run("fold_0", features, frames, splits, tmp_path / "parallel", config)
    assert fan_outs == [["fold_0-seed-0", "fold_0-seed-1"]]  # the seeds went to the GPU jobs
    assert_frame_equal(parallel, one_by_one)
    for seed in (0, 1):
        single = load_checkpoint(artifacts.sequence_model(tmp_path / "one_by_one", seed))["model"]
        pinned = load_checkpoint(artifacts.sequence_model(tmp_path / "parallel", seed))["model"]
        for name, value in single.items():
            torch.testing.assert_close(pinned[name], value, rtol=0, atol=0, msg=name)
