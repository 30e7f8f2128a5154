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
