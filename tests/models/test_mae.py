"""Masked autoencoder: masking, patchify round trip, loss on masked patches only."""

from __future__ import annotations

import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.models.encoders import create_encoder
from pipeline.models.mae import MaskedAutoencoder, random_masking, sincos_pos_embed_2d


@pytest.fixture
def mae():
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_112", depth=1)
    return MaskedAutoencoder(encoder, mask_ratio=0.75, decoder_dim=32, decoder_depth=1, decoder_heads=2)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_masking_keeps_exact_count(ratio):
    x = torch.randn(3, 49, 8)
    visible, mask, ids_restore = random_masking(x, ratio)
    keep = int(49 * (1 - ratio))
    assert visible.shape == (3, keep, 8)
    assert torch.equal(mask.sum(dim=1), torch.full((3,), 49.0 - keep))
    # The kept tokens are exactly the unmasked ones, in some order.
    for i in range(3):
        kept_rows = {tuple(r.tolist()) for r in x[i][mask[i] == 0]}
        assert kept_rows == {tuple(r.tolist()) for r in visible[i]}
    assert torch.equal(ids_restore.sort(dim=1).values, torch.arange(49).expand(3, -1))


def test_masks_differ_between_samples():
    _, mask, _ = random_masking(torch.randn(4, 49, 8), 0.75)
    assert not all(torch.equal(mask[0], mask[i]) for i in range(1, 4))


def test_patchify_round_trip(mae):
    imgs = torch.randn(2, 3, 112, 112)
    patches = mae.patchify(imgs)
    assert patches.shape == (2, 49, 16 * 16 * 3)
    assert torch.equal(mae.unpatchify(patches), imgs)
    # Patch 1 is the second 16x16 block of the first row of patches.
    assert torch.equal(patches[0, 1].reshape(16, 16, 3), imgs[0, :, :16, 16:32].permute(1, 2, 0))


def test_forward_shapes_and_encoder_sees_visible_patches_only(mae):
    imgs = torch.randn(2, 3, 112, 112)
    latent, mask, _ = mae.forward_encoder(imgs, 0.75)
    assert latent.shape == (2, 1 + 12, 192)  # cls + int(49 * 0.25) visible patches
    loss, pred, mask = mae(imgs)
    assert pred.shape == (2, 49, 768)
    assert mask.shape == (2, 49)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_loss_counts_masked_patches_only(mae):
    imgs = torch.randn(2, 3, 112, 112)
    _, pred, mask = mae(imgs)
    base = mae.forward_loss(imgs, pred, mask)
    visible = (mask == 0)[..., None]
    assert torch.equal(mae.forward_loss(imgs, pred + 5.0 * visible, mask), base)
    assert mae.forward_loss(imgs, pred + 5.0 * ~visible, mask) > base


def test_norm_pix_loss_is_zero_for_perfect_prediction(mae):
    imgs = torch.randn(2, 3, 112, 112)
    mask = torch.ones(2, 49)
    assert mae.forward_loss(imgs, mae.pixel_targets(imgs), mask) < 1e-10


def test_reconstruct_pastes_visible_patches(mae):
    imgs = torch.randn(1, 3, 112, 112)
    _, pred, mask = mae(imgs)
    masked, pasted = mae.reconstruct(imgs, pred, mask)
    visible = mae.unpatchify((1 - mask)[..., None].expand(-1, -1, 768)).bool()
    assert torch.allclose(pasted[visible], imgs[visible])
    assert torch.all(masked[~visible] == 0)


def test_fixed_position_embedding_is_frozen_sincos(mae):
    assert not mae.encoder.pos_embed.requires_grad
    assert torch.equal(mae.encoder.pos_embed, sincos_pos_embed_2d(192, (7, 7)))
