"""The fine-tuning recipes (plain with image augmentation and mixing, masked CoTEX, EMMA, the seed-002
chain) train on tiny synthetic problems, save and reload exactly, and keep their contracts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.config import FINETUNE_RECIPES
from pipeline.models.encoders import create_encoder, encoder_kwargs, load_checkpoint, save_checkpoint
from pipeline.models.finetune import average_outputs
from pipeline.tasks.definitions import basic_emotions_from_expr, get_task
from pipeline.training.finetune import RECIPES, load_recipe_model, predict_images, run_recipe
from tests.training.test_recipes import _expr_by_colour, _finetune_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def init():
    """A random 2-block vit_tiny_112 in our checkpoint format (recipes only need encoder weights)."""
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_112", depth=2)
    kwargs = encoder_kwargs("vit_tiny_112", depth=2)
    return {"model": encoder.state_dict(), "encoder": "vit_tiny_112", "encoder_kwargs": kwargs}


def _problem(n: int, seed: int):
    images, targets = _expr_by_colour(n, seed)
    rng = np.random.default_rng(seed)
    targets["au"] = (rng.random((n, 12)) < 0.3).astype(np.int64)
    targets["au"][:, 0] = targets["expr"] == 1  # one AU follows the colour class
    targets["basic"] = basic_emotions_from_expr(targets["expr"][:, None])
    return images, targets


def test_recipe_registries_agree():
    assert set(RECIPES) == set(FINETUNE_RECIPES)


def test_plain_recipe_with_crop_jitter_and_mixing_learns(init):
    images, targets = _problem(128, 1)
    val_images, val_targets = _problem(48, 2)
    config = _finetune_config(
        epochs=3, tasks=("expr",), crop_margin=0.036, colour_jitter=0.2, mixup_alpha=0.4, cutmix_alpha=1.0
    )
    checkpoint, history = run_recipe(
        images, targets, config, init=init, val_images=val_images, val_targets=val_targets
    )
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_expr_f1"] > 0.25  # 4 of 8 classes used: chance about 0.125
    again, _ = run_recipe(images, targets, config, init=init)  # augmentation and mixing draws are seeded
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, again["model"][key]), key


def test_cotex_trains_two_vits_and_averages_them(init, tmp_path):
    images, targets = _problem(96, 3)
    config = _finetune_config(recipe="cotex", epochs=2, tasks=("expr", "au"), cotex_mask_ratio=0.5)
    checkpoint, history = run_recipe(images, targets, config, init=init)
    assert history[-1]["loss"] < history[0]["loss"]
    assert "loss_js_expr" in history[0] and "loss_js_au" in history[0]
    assert any(k.startswith("second.encoder.") for k in checkpoint["heads"])
    save_checkpoint(checkpoint, tmp_path / "cotex.pt")
    model = load_recipe_model(load_checkpoint(tmp_path / "cotex.pt"))
    out = predict_images(model, images[:8], batch_size=4, device="cpu")
    first = predict_images(model.first, images[:8], batch_size=4, device="cpu")
    second = predict_images(model.second, images[:8], batch_size=4, device="cpu")
    np.testing.assert_allclose(out["expr"], (first["expr"] + second["expr"]) / 2, atol=1e-5)
    np.testing.assert_allclose(out["au"], (first["au"] + second["au"]) / 2, atol=1e-5)


def test_average_outputs_means_the_probabilities():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    mean = average_outputs(get_task("expr"), a, b).softmax(-1)
    torch.testing.assert_close(mean, (a.softmax(-1) + b.softmax(-1)) / 2)
    mean = average_outputs(get_task("au"), a[:, :4], b[:, :4]).sigmoid()
    torch.testing.assert_close(mean, (a[:, :4].sigmoid() + b[:, :4].sigmoid()) / 2, atol=1e-5, rtol=1e-4)


def test_emma_learns_va_from_scores_with_stop_gradient(init):
    images, targets = _problem(96, 4)
    rng = np.random.default_rng(0)
    # The second CNN's 7 scores: here valence is readable from them (their first column).
    cnn = rng.dirichlet(np.ones(7), len(images)).astype(np.float32)
    targets["va"][:, 0] = np.where(targets["va"][:, 0] == -5, -5, 2 * cnn[:, 0] - 0.3)
    config = _finetune_config(recipe="emma", epochs=3, tasks=("expr", "au", "va"), frozen_blocks=1)
    checkpoint, history = run_recipe(images, targets, config, init=init, extra={"fer": cnn})
    assert history[-1]["loss_va"] < history[0]["loss_va"]
    model = load_recipe_model(checkpoint)
    # Stop-gradient: the VA loss reaches the FC head only, never the ViT.
    x = torch.randn(4, 3, 112, 112)
    out = model(x, fer=torch.as_tensor(cnn[:4]))
    out["va"].sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.va_head[0].weight.grad is not None
    with pytest.raises(TypeError):
        model(x)  # the CNN scores are a required input


def test_chain_fine_tunes_aus_then_basic_emotions(init):
    images, targets = _problem(96, 5)
    config = _finetune_config(recipe="chain", epochs=2, tasks=("au",))
    checkpoint, history = run_recipe(images, targets, config, init=init)
    assert [r["phase"] for r in history] == [0, 0, 1, 1]
    assert "loss_au" in history[0] and "loss_basic" in history[-1]
    assert checkpoint["recipe"] == "chain" and checkpoint["tasks"] == ["basic"]
    assert checkpoint["config"]["chain_first_tasks"] == ["au"]
    model = load_recipe_model(checkpoint)
    out = predict_images(model, images[:6], batch_size=3, device="cpu")
    assert out["basic"].shape == (6, 6) and ((out["basic"] >= 0) & (out["basic"] <= 1)).all()


def test_basic_emotions_from_expr():
    out = basic_emotions_from_expr(np.array([[0], [1], [4], [6], [7], [-1]]))
    assert out.shape == (6, 6)
    assert (out[0] == 0).all()  # Neutral: none of the six
    assert out[1, 0] == 1 and out[1].sum() == 1  # Anger
    assert out[2, 3] == 1 and out[3, 5] == 1  # Happiness, Surprise
    assert (out[4] == -1).all() and (out[5] == -1).all()  # Other and unlabelled: invalid


def test_recipe_params_are_checked():
    from pipeline.config import ConfigError, config_from_dict
    from tests.test_config import edited

    with pytest.raises(ConfigError, match="finetune.mixup_alpha .*frozen_blocks to 0"):
        config_from_dict(edited(finetune__frozen_blocks=2, finetune__mixup_alpha=0.2))
    params = edited(finetune__recipe="emma", finetune__tasks=["expr", "au"])
    with pytest.raises(ConfigError, match="emma needs 'va'"):
        config_from_dict(params)
    params = edited(finetune__recipe="emma", faces__views=["eye_mouth"])
    with pytest.raises(ConfigError, match="add 'face' to faces.views"):
        config_from_dict(params)


def test_plain_checkpoint_reloads_to_the_same_predictions(init):
    images, targets = _problem(64, 6)
    config = dataclasses.replace(_finetune_config(epochs=1, tasks=("expr", "au")), frozen_blocks=1)
    checkpoint, _ = run_recipe(images, targets, config, init=init)
    model = load_recipe_model(checkpoint)
    again = load_recipe_model(checkpoint)
    a = predict_images(model, images[:5], batch_size=5, device="cpu")
    b = predict_images(again, images[:5], batch_size=5, device="cpu")
    np.testing.assert_array_equal(a["expr"], b["expr"])
