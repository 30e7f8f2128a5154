"""Image batches for encoders: conversion, resizing, normalisation and seeded augmentation."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.inference.images import denormalize, to_tensor_batch
from pipeline.training.augment import finetune_augment


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return finetune_augment(x, generator, crop_margin=0.1, colour_jitter=0.2)


def test_to_tensor_batch_normalises_and_augments():
    images = _images(4, 1)
    x = to_tensor_batch(images, "cpu")
    assert x.shape == (4, 3, 112, 112)
    assert torch.allclose(
        x[0, 0, 0, 0], torch.tensor((images[0, 0, 0, 0] / 255 - 0.485) / 0.229, dtype=torch.float32)
    )
    assert to_tensor_batch(images, "cpu", size=(224, 224)).shape == (4, 3, 224, 224)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = to_tensor_batch(images, "cpu", augment=lambda b: _augment(b, g1))
    assert torch.equal(a, to_tensor_batch(images, "cpu", augment=lambda b: _augment(b, g2)))
    assert not torch.equal(a, x)


def test_denormalize_inverts_normalisation():
    images = _images(2, 2)
    back = denormalize(to_tensor_batch(images, "cpu"))
    assert torch.allclose(back * 255, torch.from_numpy(images).permute(0, 3, 1, 2).float(), atol=1e-3)


def test_augmentation_keeps_range_and_shape():
    x = torch.rand(6, 3, 32, 32)
    out = _augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
