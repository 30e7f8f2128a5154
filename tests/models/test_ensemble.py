"""Ensembles of sequence models (seed 004's scene ensemble): probabilities averaged, one checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models.sequence import (
    InputSpec,
    create_sequence_model,
    ensemble_checkpoint,
    model_checkpoint,
    model_from_checkpoint,
)
from pipeline.tasks.definitions import get_tasks
from pipeline.tasks.kinds import behaviour
from pipeline.training.scenes import scene_subsets

KWARGS = {
    "hidden": 16,
    "tcn_levels": 1,
    "kernel_size": 3,
    "transformer_layers": 1,
    "heads": 2,
    "dropout": 0.0,
}


def members(n: int):
    inputs = [InputSpec("face", 6, "frame")]
    tasks = get_tasks(["expr", "au", "va", "emi"])
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(create_sequence_model("tcn_transformer", inputs, tasks, **KWARGS).eval())
    return out


def test_ensemble_averages_member_probabilities_and_round_trips() -> None:
    models = members(3)
    checkpoint = ensemble_checkpoint([model_checkpoint(m, "tcn_transformer", KWARGS, {}) for m in models], {})
    ensemble = model_from_checkpoint(checkpoint)
    x = {"face": torch.randn(2, 9, 6)}
    with torch.no_grad():
        got = ensemble(x)
        single = [m(x) for m in models]
    for task in ensemble.tasks:
        expected = torch.stack([behaviour(task).activation(o[task.name]) for o in single]).mean(dim=0)
        np.testing.assert_allclose(
            behaviour(task).activation(got[task.name]).numpy(), expected.numpy(), atol=1e-5
        )
    assert got["emi"].shape == (2, 6) and got["expr"].shape == (2, 9, 8)


def test_members_must_share_inputs_and_tasks() -> None:
    a = members(1)[0]
    b = create_sequence_model("mlp", [InputSpec("face", 6, "frame")], get_tasks(["expr"]), **KWARGS)
    with pytest.raises(ValueError, match="share inputs and tasks"):
        from pipeline.models.ensemble import EnsembleModel

        EnsembleModel([a, b])


def test_scene_subsets_are_brightness_quantiles() -> None:
    brightness = {f"t{i}": float(b) for i, b in enumerate([200, 10, 90, 50, 150, 120])}
    subsets = scene_subsets(brightness, 2)
    assert subsets == [["t1", "t2", "t3"], ["t0", "t4", "t5"]]
    with pytest.raises(ValueError, match="cannot fill"):
        scene_subsets(brightness, 4)


def test_epoch_ensemble_keeps_the_last_epochs_and_predicts_as_one_model(tiny_train_config) -> None:
    import dataclasses

    from pipeline.features.sequences import TrackSequence
    from pipeline.inference.sequences import predict_sequence
    from pipeline.training.sequence import train_sequence_model

    rng = np.random.default_rng(0)
    tracks = []
    for i in range(4):
        expr = np.repeat(rng.integers(0, 8, 4), 10)
        frames = np.eye(8, dtype=np.float32)[expr] + 0.1 * rng.normal(size=(40, 8)).astype(np.float32)
        tracks.append(
            TrackSequence(f"t{i}", {"face": frames}, {"face": np.ones(40, bool)}, {}, {"expr": expr})
        )
    config = dataclasses.replace(
        tiny_train_config, tasks=("expr",), views=("face",), epochs=4, epoch_ensemble=3
    )
    checkpoint, history = train_sequence_model(tracks, config, seed=0)
    assert len(checkpoint["ensemble"]) == 3 and len(history) == 4
    weights = [m["model"] for m in checkpoint["ensemble"]]
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])  # different epochs
    outputs = predict_sequence(model_from_checkpoint(checkpoint), tracks[0], config.window, config.stride)
    np.testing.assert_allclose(outputs["expr"].sum(axis=1), 1.0, atol=1e-4)
