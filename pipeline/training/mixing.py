"""Mixup and CutMix on image batches, with the loss mixed instead of the targets (timm Mixup semantics).

Instead of soft targets, the loss is taken twice: once against the batch's own targets and once against
the targets of the images mixed in, weighted by lam and 1 - lam. For cross-entropy this equals the loss
on mixed one-hot targets; the same recipe works for every task kind (multilabel, regression by CCC) and
each half keeps its rows' invalid markers, so unlabelled rows still drop out of their half.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw from Beta(alpha, alpha), reproducible from the torch generator (torch's Beta takes none)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _uniform_int(high: int, generator: torch.Generator | None) -> int:
    """An integer uniform in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator))


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """timm's `rand_bbox`: a box of area about (1 - lam) H W, centred uniformly, clipped to the image.

    Returns:
        (top, bottom, left, right), pixel bounds with bottom / right exclusive.
    """
    cut = (1 - lam) ** 0.5
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = _uniform_int(height, generator), _uniform_int(width, generator)
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return top, bottom, left, right


def mix_batch(
    x: torch.Tensor, generator: torch.Generator | None, mixup_alpha: float, cutmix_alpha: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup or CutMix of a batch with a random permutation of itself.

    Mixup: lam ~ Beta(a, a), x = lam x + (1 - lam) x[perm]. CutMix: lam ~ Beta(a, a), a box of area about
    (1 - lam) is pasted from x[perm] and lam is corrected to the share of pixels actually kept. With both
    alphas > 0 each batch uses one of the two with p = 0.5 (timm's switch_prob); with both 0 nothing
    changes (perm = arange, lam = 1). One lam per batch, as timm's default "batch" mode.

    Args:
        x: [N, C, H, W] images (before or after normalisation: both mixes commute with it).
        generator: CPU generator for every random draw (None = torch's global RNG).
        mixup_alpha: Beta parameter of mixup (0 = off).
        cutmix_alpha: Beta parameter of CutMix (0 = off).

    Returns:
        x_mixed [N, C, H, W] (a new tensor), perm [N] int64 on x's device, lam (share of x's own image).
    """
    n, _, height, width = x.shape
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix):
        return x, torch.arange(n, device=x.device), 1.0
    if use_mixup and use_cutmix:
        use_cutmix = bool(torch.rand(1, generator=generator) < 0.5)
    perm = torch.randperm(n, generator=generator).to(x.device)
    if use_cutmix:
        lam = _beta(cutmix_alpha, generator)
        top, bottom, left, right = cutmix_box(height, width, lam, generator)
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
        # The clipped box can be smaller than asked: lam is the share of pixels really kept.
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        return mixed, perm, lam
    lam = _beta(mixup_alpha, generator)
    return lam * x + (1 - lam) * x[perm], perm, lam


def _permute(targets: Any, perm: torch.Tensor) -> Any:
    """Rows of a tensor, or of every tensor in a dict, in `perm` order (dim 0 = batch)."""
    if isinstance(targets, dict):
        return {name: value[perm.to(value.device)] for name, value in targets.items()}
    return targets[perm.to(targets.device)]


def mixed_loss(
    loss_fn: Callable[[Any, Any], tuple[torch.Tensor, dict[str, float]]],
    outputs: Any,
    targets: Any,
    perm: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """lam * loss(outputs, targets) + (1 - lam) * loss(outputs, targets[perm]), parts mixed the same way.

    Args:
        loss_fn: (outputs, targets) -> (loss, parts), e.g.
            `lambda o, t: multitask_loss(tasks, o, t, weights)`.
        outputs: the model's outputs on the mixed batch (passed through unchanged).
        targets: a tensor or a dict of tensors with the batch in dim 0 ([N], [N, C], [N, T, C], ...).
        perm, lam: from `mix_batch`.

    Returns:
        loss (scalar tensor), parts {name: float}.
    """
    loss, parts = loss_fn(outputs, targets)
    if lam >= 1.0:
        return loss, parts
    loss_b, parts_b = loss_fn(outputs, _permute(targets, perm))
    mixed_parts = {name: lam * parts[name] + (1 - lam) * parts_b[name] for name in parts}
    return lam * loss + (1 - lam) * loss_b, mixed_parts
