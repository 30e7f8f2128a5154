"""Sequence models over named inputs: output shapes per task level, padding invariance, temporal context,
standardisation inside the model and checkpoints that rebuild it alone."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.sequence import (
    SEQUENCE_MODELS,
    InputSpec,
    create_sequence_model,
    model_checkpoint,
    model_from_checkpoint,
)
from pipeline.tasks.definitions import TASKS

ALL_TASKS = list(TASKS.values())
SMALL = {"hidden": 16, "tcn_levels": 2, "kernel_size": 3, "transformer_layers": 1, "heads": 2, "dropout": 0.1}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name: str, dim: int, tasks=ALL_TASKS):
    torch.manual_seed(0)
    return create_sequence_model(name, [InputSpec("face", dim)], tasks, **SMALL).eval()


@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_output_shapes_per_task(name):
    model = _model(name, 10)
    pad_mask = torch.zeros(3, 20, dtype=torch.bool)
    pad_mask[1, 15:] = True
    out = model({"face": torch.randn(3, 20, 10)}, pad_mask)
    assert set(out) == set(TASKS)
    for task in ALL_TASKS:
        # Frame tasks keep the time axis; video tasks are pooled over the window.
        shape = (3, 20, task.num_outputs) if task.level == "frame" else (3, task.num_outputs)
        assert out[task.name].shape == shape, task.name
        assert torch.isfinite(out[task.name]).all()
        if task.kind == "regression":
            assert out[task.name].abs().max() <= 1  # tanh


def test_forward_is_features_then_head():
    model = _model("tcn_transformer", 6)
    x = {"face": torch.randn(2, 9, 6)}
    with torch.no_grad():
        h = model.forward_features(x)
        assert h.shape == (2, 9, SMALL["hidden"])
        direct, split = model(x), model.forward_head(h)
    for task in ALL_TASKS:
        assert torch.equal(direct[task.name], split[task.name])


@pytest.mark.parametrize("name", ["tcn_transformer", "tcn", "transformer", "multimodal_transformer"])
def test_padding_does_not_change_valid_frames(name):
    model = _model(name, 6)
    x = torch.randn(1, 12, 6)
    padded = torch.cat([x, 100 * torch.randn(1, 5, 6)], dim=1)
    pad_mask = torch.zeros(1, 17, dtype=torch.bool)
    pad_mask[:, 12:] = True
    with torch.no_grad():
        plain, masked = model({"face": x}), model({"face": padded}, pad_mask)
    for task in ALL_TASKS:
        valid = masked[task.name][:, :12] if task.level == "frame" else masked[task.name]
        assert torch.allclose(valid, plain[task.name], atol=1e-5), task.name


def test_temporal_context_matters_only_for_temporal_models():
    x = torch.randn(1, 16, 6)
    x2 = x.clone()
    x2[0, 10] += 10.0  # change one frame
    with torch.no_grad():
        mlp = _model("mlp", 6)
        assert torch.equal(mlp({"face": x})["expr"][0, 9], mlp({"face": x2})["expr"][0, 9])
        tcn = _model("tcn_transformer", 6)
        assert not torch.allclose(tcn({"face": x})["expr"][0, 9], tcn({"face": x2})["expr"][0, 9])


def test_unknown_model_is_rejected():
    with pytest.raises(KeyError, match="tcn_transformer"):
        create_sequence_model("lstm", [InputSpec("face", 4)], ALL_TASKS)


def test_model_normalization_is_applied_and_saved():
    model = _model("mlp", 3)
    x = torch.randn(1, 4, 3)
    with torch.no_grad():
        before = model({"face": x})["expr"]
        model.set_normalization("face", torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0]))
        after = model({"face": x * 2 + torch.tensor([1.0, 2.0, 3.0])})["expr"]
    assert torch.allclose(before, after, atol=1e-5)
    state = model.state_dict()
    assert "embed.face_mean" in state and "embed.face_std" in state


def test_checkpoint_rebuilds_the_model_alone():
    tasks = [TASKS["expr"], TASKS["va"]]
    model = _model("tcn_transformer", 5, tasks)
    model.set_normalization("face", torch.arange(5.0), torch.full((5,), 3.0))
    checkpoint = model_checkpoint(model, "tcn_transformer", SMALL, {"window": 8})
    rebuilt = model_from_checkpoint(checkpoint)
    assert not rebuilt.training and [t.name for t in rebuilt.tasks] == ["expr", "va"]
    x = {"face": torch.randn(2, 8, 5)}
    with torch.no_grad():
        for name, value in model(x).items():
            assert torch.equal(rebuilt(x)[name], value), name
