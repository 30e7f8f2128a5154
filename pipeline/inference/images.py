"""Images in, encoder outputs out: batch preprocessing, feature extraction and per-image task outputs.

Images arrive as uint8 [N, H, W, 3] RGB arrays; `to_tensor_batch` converts a batch on the device, resizes
it to the encoder's input size and normalises it with the ImageNet statistics (as the MAE reference does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.models.encoders import encoder_from_checkpoint, feature_dim, input_size
from pipeline.runtime import autocast, channels_last

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor_batch(
    images: np.ndarray,
    device: str | torch.device,
    *,
    size: Sequence[int] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """uint8 [N, H, W, 3] RGB -> normalised float [N, 3, size] on the device.

    The uint8 array travels to the device first (4x less to copy than float). Without augmentation the
    resize runs on the uint8 batch (antialiased bilinear, 5x faster than in float on CPU, within one grey
    level of it): it was 13% of feature extraction. `augment`, when given, maps a [N, 3, H, W] batch in
    [0, 1] to another and runs before the (then float) resize and the normalisation.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2)
    resize = size is not None and tuple(x.shape[-2:]) != tuple(size)
    if resize and augment is None:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        resize = False
    x = x.float().div_(255.0)
    if augment is not None:
        x = augment(x)
    if resize:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, clamped to [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


@torch.inference_mode()
def encode_images(
    encoder: nn.Module, images: np.ndarray, *, batch_size: int, device: str, desc: str | None = "features"
) -> np.ndarray:
    """Pooled features of every image (eval mode, no masking, no augmentation): uint8 [N, H, W, 3] ->
    float32 [N, D]."""
    encoder = channels_last(encoder.to(device).eval(), device)
    size = input_size(encoder)
    parts = [torch.zeros(0, feature_dim(encoder))]
    steps = range(0, len(images), batch_size)
    for start in tqdm(steps, desc=desc, disable=None if desc else True):
        x = to_tensor_batch(images[start : start + batch_size], device, size=size)
        with autocast(device):
            parts.append(encoder(x).float().cpu())
    return torch.cat(parts).numpy()


def extract_features(
    images: np.ndarray, checkpoint: dict[str, Any], *, batch_size: int, device: str
) -> np.ndarray:
    """`encode_images` with the encoder of any checkpoint of ours (pretrain or fine-tune)."""
    return encode_images(encoder_from_checkpoint(checkpoint), images, batch_size=batch_size, device=device)
