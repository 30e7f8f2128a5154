"""Masked ViT features (masked CoTEX): kept tokens, reproducible masks, equality with the plain paths."""

from __future__ import annotations

import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.models.encoders import create_encoder
from pipeline.models.masked_vit import keep_random_tokens, masked_features, masked_upper_features
from pipeline.models.split_vit import lower_tokens, upper_features

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_encoder("vit_tiny_80", depth=2).eval()  # 5 x 5 = 25 patches


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 80, 80, generator=_gen(9))


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75])
def test_keeps_cls_and_exact_count_in_patch_order(ratio):
    tokens = torch.arange(3 * 26, dtype=torch.float32).view(3, 26, 1).expand(-1, -1, 4)
    kept = keep_random_tokens(tokens, ratio, _gen())
    assert kept.shape == (3, 1 + int(25 * (1 - ratio)), 4)
    assert torch.equal(kept[:, 0], tokens[:, 0])  # the cls token is always kept
    ids = kept[:, 1:, 0]
    assert (ids[:, 1:] > ids[:, :-1]).all()  # distinct patches, original order
    assert torch.isin(ids, tokens[:, 1:, 0]).all()


def test_masks_depend_on_generator_only():
    tokens = torch.randn(4, 26, 8)
    a = keep_random_tokens(tokens, 0.75, _gen(1))
    assert torch.equal(a, keep_random_tokens(tokens, 0.75, _gen(1)))
    assert not torch.equal(a, keep_random_tokens(tokens, 0.75, _gen(2)))
    assert not all(torch.equal(a[0, 1:], a[i, 1:]) for i in range(1, 4))  # one mask per sample
    with pytest.raises(ValueError):
        keep_random_tokens(tokens, 1.0, _gen())


def test_masked_features_shape_and_reproducibility(encoder, images):
    with torch.no_grad():
        a = masked_features(encoder, images, 0.75, _gen(1))
        assert a.shape == (3, 192)
        assert torch.equal(a, masked_features(encoder, images, 0.75, _gen(1)))
        assert not torch.allclose(a, masked_features(encoder, images, 0.75, _gen(2)))


def test_ratio_zero_equals_plain_forward(encoder, images):
    with torch.no_grad():
        assert torch.allclose(masked_features(encoder, images, 0.0, _gen()), encoder(images), atol=1e-5)
        for frozen in (0, 1, 2):
            tokens = lower_tokens(encoder, images, frozen)
            assert torch.allclose(
                masked_upper_features(encoder, tokens, frozen, 0.0, _gen()),
                upper_features(encoder, tokens, frozen),
                atol=1e-5,
            )


def test_upper_with_no_frozen_blocks_equals_masked_features(encoder, images):
    with torch.no_grad():
        tokens = lower_tokens(encoder, images, 0)
        upper = masked_upper_features(encoder, tokens, 0, 0.5, _gen(4))
        assert torch.allclose(upper, masked_features(encoder, images, 0.5, _gen(4)), atol=1e-5)
        assert masked_upper_features(encoder, lower_tokens(encoder, images, 1), 1, 0.5, _gen(4)).shape == (
            3,
            192,
        )


def test_gradient_reaches_patch_embed():
    torch.manual_seed(0)
    model = create_encoder("vit_tiny_80", depth=1).train()
    features = masked_features(model, torch.randn(2, 3, 80, 80), 0.75, _gen())
    features.pow(2).mean().backward()
    grad = model.patch_embed.proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.cls_token.grad is not None and model.pos_embed.grad is not None
