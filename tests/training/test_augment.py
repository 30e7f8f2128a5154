"""Fine-tuning augmentations: torchvision semantics, per-sample parameters, reproducible draws."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pipeline  # noqa: F401  (torchvision shim before torchvision)
from pipeline.training.augment import (
    colour_jitter_batch,
    crop_resize,
    finetune_augment,
    random_resized_crop_flip,
    random_resized_crop_params,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_params_follow_random_resized_crop():
    height, width = 40, 60
    boxes = random_resized_crop_params(2000, height, width, _gen(), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    top, left, h, w = boxes.unbind(1)
    assert boxes.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    # Drawn boxes (not the fallback): area share in scale (up to rounding) and ratio in range.
    area = (h * w).double() / (height * width)
    drawn = ~((h == height) & (w == 53))  # the fallback for a 3:2 image is 40 x 53
    assert area.min() >= 0.2 - 0.02 and area.max() <= 1.0
    assert ((w / h)[drawn] >= 3 / 4 - 0.05).all() and ((w / h)[drawn] <= 4 / 3 + 0.05).all()
    # Corners cover the positions that fit, not just the centre.
    assert len(set(top.tolist())) > 10 and len(set(left.tolist())) > 10


def test_crop_params_fall_back_to_centre_crop():
    # A ratio range far from anything that fits in a 10 x 100 image forces the fallback.
    boxes = random_resized_crop_params(5, 10, 100, _gen(), scale=(0.9, 1.0), ratio=(1.0, 2.0))
    assert boxes.tolist() == [[0, 40, 10, 20]] * 5  # as tall as the image, width capped by max ratio 2


def test_crop_resize_matches_torchvision_resized_crop():
    import torchvision.transforms.functional as TF

    x = torch.rand(2, 3, 32, 32)
    boxes = torch.tensor([[4, 6, 20, 16], [0, 0, 32, 32]])
    out = crop_resize(x, boxes)
    expected = TF.resized_crop(x[0], 4, 6, 20, 16, [32, 32], antialias=True)
    # Equal away from the box edge, where grid_sample reads the neighbouring pixels of the image.
    assert torch.allclose(out[0, :, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)  # the full image is the identity


def test_random_resized_crop_flip_is_per_sample_and_reproducible():
    x = torch.rand(6, 3, 24, 24)
    a = random_resized_crop_flip(x, _gen(1))
    assert a.shape == x.shape
    assert torch.equal(a, random_resized_crop_flip(x, _gen(1)))
    assert not torch.equal(a, random_resized_crop_flip(x, _gen(2)))
    # Same image everywhere: different outputs mean per-sample boxes.
    same = random_resized_crop_flip(x[:1].expand(6, -1, -1, -1), _gen(1))
    assert not all(torch.equal(same[0], same[i]) for i in range(1, 6))


def test_flip_only_without_crop_and_jitter():
    x = torch.rand(32, 3, 8, 8)
    out = finetune_augment(x, _gen(), crop_margin=0.0, colour_jitter=0.0)
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert (flipped ^ kept).all()  # every sample is exactly the image or its mirror
    assert 0 < int(flipped.sum()) < 32
    assert torch.equal(finetune_augment(x, _gen(), hflip=False), x)
    # Full-scale box with scale (1, 1) and ratio 1: random_resized_crop_flip is flip only too.
    out = random_resized_crop_flip(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    assert torch.allclose(out, x, atol=1e-5)


def test_finetune_crop_is_a_crop_of_the_upscaled_image():
    x = torch.rand(8, 3, 20, 20)
    out = finetune_augment(x, _gen(3), crop_margin=0.1, hflip=False)  # 20 -> 22: 3 x 3 offsets
    big = F.interpolate(x, size=(22, 22), mode="bilinear", align_corners=False)
    offsets = set()
    for o, b in zip(out, big, strict=True):
        errors = {
            (i, j): float((o - b[:, i : i + 20, j : j + 20]).abs().max()) for i in range(3) for j in range(3)
        }
        best = min(errors, key=errors.get)
        assert errors[best] < 1e-5
        offsets.add(best)
    assert len(offsets) > 1


@pytest.mark.parametrize("strength", [0.4, 1.0])
def test_colour_jitter_matches_torchvision(strength):
    import torchvision.transforms.functional as TF

    x = torch.rand(4, 3, 8, 8)
    out = colour_jitter_batch(x, strength, _gen(5))
    factors = (1 + strength * (torch.rand(3, 4, generator=_gen(5)) * 2 - 1)).clamp_min(0)
    for i in range(4):
        b, c, s = factors[:, i].tolist()
        expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), s)
        assert torch.allclose(out[i], expected, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(colour_jitter_batch(x, 0.0, _gen()), x)


def test_finetune_augment_full_reproducible():
    x = torch.rand(4, 3, 16, 16)
    a = finetune_augment(x, _gen(7), crop_margin=0.036, colour_jitter=0.4)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, finetune_augment(x, _gen(7), crop_margin=0.036, colour_jitter=0.4))
    assert not math.isclose(float((a - x).abs().mean()), 0.0)
