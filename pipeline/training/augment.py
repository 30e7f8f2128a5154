"""Label-preserving image augmentation for encoder training (on batches already on the device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---- The seeds' fine-tuning augmentations (torchvision semantics, per-sample parameters, batched) ----
#
# A crop is a box (top, left, height, width) in input pixels; `crop_resize` resamples every box of a batch
# to the input size in one `F.grid_sample` call (bilinear, per-sample affine grid), instead of one
# torchvision call per image. Random draws come from a CPU generator, so runs are reproducible whatever
# the device.


def _flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror each sample left-right with p = 0.5. x: [N, C, H, W]."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop one box per sample and resize it bilinearly to the input size.

    The output pixel centres map onto the box exactly as `F.interpolate(crop, align_corners=False)` maps
    them (so a full-image box is the identity, up to float rounding). The one difference from resizing the
    cropped tensor: sample points within half a pixel of the box edge read the image's neighbouring
    pixels instead of repeating the box's edge pixels.

    Args:
        x: [N, C, H, W] float.
        boxes: [N, 4] (top, left, height, width) in pixels (may be fractional), inside the image.

    Returns:
        [N, C, H, W].
    """
    n, _, height, width = x.shape
    top, left, h, w = boxes.double().unbind(1)
    # Normalised coordinates (align_corners=False): -1 and 1 are the outer edges of the image.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_params(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's `RandomResizedCrop.get_params`, for n samples at once.

    Each sample tries `attempts` boxes with an area share uniform in `scale` and an aspect ratio (w / h)
    log-uniform in `ratio`, and takes the first that fits in the image; when none fits it takes the
    centre crop with the aspect ratio clamped to `ratio`.

    Returns:
        [N, 4] int64 boxes (top, left, height, width).
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float64))
    target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=generator))
    aspect = torch.exp(
        log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(n, attempts, generator=generator)
    )
    w = torch.round(torch.sqrt(target_area.double() * aspect)).long()  # [N, attempts]
    h = torch.round(torch.sqrt(target_area.double() / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1)  # first attempt that fits (0 when none does)
    found = fits.any(dim=1)
    rows = torch.arange(n)
    w, h = w[rows, first], h[rows, first]

    # Fallback: the centre crop, as wide or as tall as allowed by the ratio bounds.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)

    # Uniform integer corner among the positions where the box fits (randint(0, H - h + 1)).
    top = (torch.rand(n, generator=generator) * (height - h + 1)).floor().long()
    left = (torch.rand(n, generator=generator) * (width - w + 1)).floor().long()
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
) -> torch.Tensor:
    """The MAE reference's pretraining augmentation: RandomResizedCrop to the input size + flip (p = 0.5).

    Crop boxes follow torchvision's RandomResizedCrop (see `random_resized_crop_params`), resized back to
    the input size bilinearly (`crop_resize`); every sample draws its own box and flip.

    Args:
        x: [N, C, H, W] float (e.g. in [0, 1], before normalisation).
        generator: CPU generator for every random draw (None = torch's global RNG).
        scale: range of the box's share of the image area.
        ratio: range of the box's aspect ratio (width / height), drawn log-uniformly.
        hflip: mirror left-right with p = 0.5.

    Returns:
        [N, C, H, W].
    """
    n, _, height, width = x.shape
    boxes = random_resized_crop_params(n, height, width, generator, scale, ratio)
    x = crop_resize(x, boxes)
    return _flip(x, generator) if hflip else x


def colour_jitter_batch(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    """torchvision ColorJitter(brightness=s, contrast=s, saturation=s), per sample, in a fixed order.

    Factors are uniform in [1 - s, 1 + s] (floored at 0). As torchvision's tensor ops: brightness scales
    the image, contrast blends it with the mean of its grayscale, saturation blends it with its
    grayscale (ITU-R 601 luma), each result clamped to [0, 1]. torchvision applies the three in a random
    order; here it is always brightness, contrast, saturation (one less random draw, same families).

    Args:
        x: [N, 3, H, W] float in [0, 1].
        strength: s; 0 returns x unchanged.
    """
    if strength <= 0:
        return x
    n = x.shape[0]
    factors = (1 + strength * (torch.rand(3, n, generator=generator) * 2 - 1)).clamp_min(0)
    brightness, contrast, saturation = factors.to(x).view(3, n, 1, 1, 1)

    def grayscale(img: torch.Tensor) -> torch.Tensor:  # [N, 1, H, W]
        r, g, b = img.unbind(1)
        return (0.2989 * r + 0.587 * g + 0.114 * b)[:, None]  # torchvision's weights

    x = (x * brightness).clamp(0, 1)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (contrast * x + (1 - contrast) * mean).clamp(0, 1)
    x = (saturation * x + (1 - saturation) * grayscale(x)).clamp(0, 1)
    return x


def finetune_augment(
    x: torch.Tensor,
    generator: torch.Generator | None,
    crop_margin: float = 0.0,
    colour_jitter: float = 0.0,
    hflip: bool = True,
) -> torch.Tensor:
    """Seed 001's fine-tuning augmentation ("resize to 232, random crop 224"), for any input size.

    Upscale by (1 + crop_margin) (the side rounded to whole pixels), take a random crop of the input size
    at an integer offset (torchvision RandomCrop), then colour jitter (`colour_jitter_batch`) and a left-right
    flip with p = 0.5; every sample draws its own crop, factors and flip. Upscale + crop is done as one
    bilinear resample, equal to `F.interpolate` to the larger size followed by the crop. With
    crop_margin = 0 and colour_jitter = 0 it is the flip alone (exact pixels).

    Args:
        x: [N, 3, H, W] float in [0, 1] (before normalisation).
        generator: CPU generator for every random draw (None = torch's global RNG).
        crop_margin: m in (1 + m) x upscaling; seed 001's 232 / 224 is m = 0.036.
        colour_jitter: brightness / contrast / saturation jitter s (seeds 001, 002: 0.4).
        hflip: mirror left-right with p = 0.5.

    Returns:
        [N, 3, H, W].
    """
    n, _, height, width = x.shape
    big_h, big_w = round(height * (1 + crop_margin)), round(width * (1 + crop_margin))
    if (big_h, big_w) != (height, width):
        top = (torch.rand(n, generator=generator) * (big_h - height + 1)).floor()
        left = (torch.rand(n, generator=generator) * (big_w - width + 1)).floor()
        # The crop in the upscaled image, mapped back to input pixels (one input pixel = big / input ones).
        sy, sx = height / big_h, width / big_w
        boxes = torch.stack(
            [top * sy, left * sx, torch.full_like(top, height * sy), torch.full_like(left, width * sx)], dim=1
        )
        x = crop_resize(x, boxes)
    x = colour_jitter_batch(x, colour_jitter, generator)
    return _flip(x, generator) if hflip else x
