"""Label-preserving image augmentation for encoder training (on batches already on the device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Light, label-preserving augmentation of a batch in [0, 1].

    Horizontal flip (EXPR and VA are mirror invariant and the AUs are scored bilaterally), random zoom-in
    up to 15% with a translation up to 5% (a random resized crop on aligned faces), brightness and contrast
    jitter of +-20%. Random draws come from `generator` (a CPU generator; None = torch's global RNG).

    Args:
        x: [N, 3, H, W] float in [0, 1].
    """
    n = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1  # U(-1, 1)

    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale = 1.0 - 0.075 * (uniform(n) + 1)  # in [0.85, 1]: sample a smaller area, i.e. zoom in
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = 0.1 * uniform(n, 2)  # grid coordinates span 2, so 0.1 is 5% of the side
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = (1 + 0.2 * uniform(n, 1, 1, 1)).to(x)
    contrast = (1 + 0.2 * uniform(n, 1, 1, 1)).to(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (((x - mean) * contrast + mean) * brightness).clamp(0, 1)
