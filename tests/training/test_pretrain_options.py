"""MAE pretraining options: the reference augmentation, starting from an external checkpoint, skipping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.models.encoders import create_encoder
from pipeline.training.pretrain import pretrain_mae
from tests.training.test_recipes import CONFIG, TINY, _faces

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**changes):
    base = dict(
        encoder="vit_tiny_112",
        epochs=1,
        batch_size=16,
        lr=3e-3,
        warmup_epochs=0.5,
        decoder_dim=32,
        decoder_depth=1,
        seed=0,
    )
    return dataclasses.replace(CONFIG.pretrain, **(base | changes))


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A MAE-reference-format checkpoint file ({"model": ..., "epoch"}) with a decoder key to drop."""
    torch.manual_seed(3)
    encoder = create_encoder("vit_tiny_112", **TINY)
    state = dict(encoder.state_dict()) | {"mask_token": torch.zeros(1, 1, 32)}
    path = tmp_path_factory.mktemp("external") / "mae_pretrain.pth"
    torch.save({"model": state, "epoch": 799}, path)
    return path, encoder.state_dict()


def test_skipping_pretraining_uses_the_init_as_it_is(external):
    path, state = external
    checkpoint, history = pretrain_mae(
        _faces(8, 0), _config(init=str(path), epochs=0), encoder_overrides=TINY
    )
    assert history == [] and "mae" not in checkpoint
    for key, value in state.items():
        assert torch.equal(checkpoint["model"][key], value), key
    with pytest.raises(ValueError, match="only when pretrain.init"):
        pretrain_mae(_faces(8, 0), _config(epochs=0), encoder_overrides=TINY)


def test_continued_pretraining_keeps_the_loaded_position_embedding(external):
    path, state = external
    checkpoint, history = pretrain_mae(_faces(32, 1), _config(init=str(path)), encoder_overrides=TINY)
    assert len(history) == 1 and "mae" in checkpoint
    assert torch.equal(checkpoint["model"]["pos_embed"], state["pos_embed"])  # frozen, not overwritten
    assert not torch.equal(checkpoint["model"]["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert checkpoint["config"]["init"] == str(path)


def test_reference_augmentation_changes_what_the_mae_sees():
    images = _faces(32, 2)
    plain, h_plain = pretrain_mae(images, _config(crop_scale_min=1.0, hflip=False), encoder_overrides=TINY)
    augmented, h_aug = pretrain_mae(images, _config(crop_scale_min=0.2, hflip=True), encoder_overrides=TINY)
    again, h_again = pretrain_mae(images, _config(crop_scale_min=0.2, hflip=True), encoder_overrides=TINY)
    assert h_plain[0]["loss"] != h_aug[0]["loss"]
    assert h_aug[0]["loss"] == h_again[0]["loss"]  # augmentation draws are seeded
    assert np.isfinite(h_aug[0]["loss"])


def test_pretraining_resumes_after_an_interruption(tmp_path, monkeypatch):
    from pipeline.training import loop

    images = _faces(32, 4)
    whole, _ = pretrain_mae(images, _config(epochs=2), encoder_overrides=TINY)
    save = loop._save_resume

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch's state reached the disk

    resume = tmp_path / "resume.pt"
    monkeypatch.setattr(loop, "_save_resume", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain_mae(images, _config(epochs=2), encoder_overrides=TINY, resume_path=resume)
    monkeypatch.setattr(loop, "_save_resume", save)
    resumed, history = pretrain_mae(images, _config(epochs=2), encoder_overrides=TINY, resume_path=resume)
    assert [r["epoch"] for r in history] == [0, 1]
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, msg=key)
