"""Mixup / CutMix: timm semantics, reproducible draws, loss mixed over targets for every task kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.tasks.definitions import get_tasks
from pipeline.training.losses import multitask_loss
from pipeline.training.mixing import cutmix_box, mix_batch, mixed_loss

TASKS = get_tasks(["expr", "au", "va"])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_both_off_is_identity():
    x = torch.rand(5, 3, 8, 8)
    mixed, perm, lam = mix_batch(x, _gen(), 0.0, 0.0)
    assert torch.equal(mixed, x) and torch.equal(perm, torch.arange(5)) and lam == 1.0


def test_mixup_is_convex_combination_and_reproducible():
    x = torch.rand(6, 3, 8, 8)
    mixed, perm, lam = mix_batch(x, _gen(1), 0.8, 0.0)
    assert 0 < lam < 1 and perm.dtype == torch.int64 and sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    again = mix_batch(x, _gen(1), 0.8, 0.0)
    assert torch.equal(again[0], mixed) and torch.equal(again[1], perm) and again[2] == lam
    assert mix_batch(x, _gen(2), 0.8, 0.0)[2] != lam


def test_cutmix_pastes_a_box_and_corrects_lam():
    x = torch.rand(6, 3, 16, 16)
    for seed in range(10):
        mixed, perm, lam = mix_batch(x, _gen(seed), 0.0, 1.0)
        from_other = (mixed != x).any(dim=1)  # [N, H, W] pixels taken from x[perm]
        pasted = (mixed == x[perm]).all(dim=1) & from_other
        # lam is the share of pixels kept (rows whose partner is itself change nothing).
        moved = perm != torch.arange(6)
        if moved.any():
            share = float(from_other[moved].float().mean(dim=(1, 2)).max())
            assert share == pytest.approx(1 - lam)
            assert torch.equal(pasted[moved], from_other[moved])


def test_cutmix_box_clips_to_image():
    for seed in range(20):
        top, bottom, left, right = cutmix_box(10, 12, 0.3, _gen(seed))
        assert 0 <= top <= bottom <= 10 and 0 <= left <= right <= 12


def test_both_on_switches_per_batch():
    x = torch.rand(4, 3, 8, 8)
    kinds = set()
    for seed in range(20):
        mixed, perm, lam = mix_batch(x, _gen(seed), 0.8, 1.0)
        is_mixup = torch.allclose(mixed, lam * x + (1 - lam) * x[perm]) and lam not in (0.0, 1.0)
        kinds.add("mixup" if is_mixup else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def _targets(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    expr = torch.as_tensor(rng.integers(0, 8, n))
    au = torch.as_tensor(rng.integers(0, 2, (n, 12)))
    va = torch.as_tensor(rng.uniform(-1, 1, (n, 2))).float()
    expr[:3] = -1  # invalid markers stay on their rows
    au[3:5, 0] = -1
    va[5] = -5
    return {"expr": expr, "au": au, "va": va}


def test_mixed_loss_combines_both_target_sets():
    rng = np.random.default_rng(0)
    n = 12
    outputs = {t.name: torch.randn(n, t.num_outputs, requires_grad=True) for t in TASKS}
    targets = _targets(rng, n)
    perm = torch.randperm(n, generator=_gen())
    lam = 0.3

    def loss_fn(o, t):
        return multitask_loss(TASKS, o, t)

    loss, parts = mixed_loss(loss_fn, outputs, targets, perm, lam)
    loss_a, parts_a = loss_fn(outputs, targets)
    loss_b, parts_b = loss_fn(outputs, {k: v[perm] for k, v in targets.items()})
    assert float(loss.detach()) == pytest.approx(
        lam * float(loss_a.detach()) + (1 - lam) * float(loss_b.detach()), rel=1e-6
    )
    for name in parts:
        assert parts[name] == pytest.approx(lam * parts_a[name] + (1 - lam) * parts_b[name], rel=1e-6)
    loss.backward()
    assert all(torch.isfinite(o.grad).all() for o in outputs.values())
    # lam = 1 is the plain loss.
    plain, plain_parts = mixed_loss(loss_fn, outputs, targets, torch.arange(n), 1.0)
    assert float(plain.detach()) == pytest.approx(float(loss_a.detach())) and plain_parts == pytest.approx(
        parts_a
    )


def test_mixed_cross_entropy_equals_soft_targets():
    # For cross-entropy, mixing the losses is mixing one-hot targets (what timm's soft targets do).
    logits = torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,), generator=_gen())
    perm = torch.randperm(6, generator=_gen(1))
    lam = 0.7

    def loss_fn(o, t):
        return torch.nn.functional.cross_entropy(o, t), {}

    loss, _ = mixed_loss(loss_fn, logits, labels, perm, lam)
    soft = lam * torch.eye(5)[labels] + (1 - lam) * torch.eye(5)[labels[perm]]
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, soft)), rel=1e-6)
