"""Per-task losses: invalid rows and padding are ignored, class weights, CCC, video-level window targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.tasks.definitions import TASKS, get_tasks
from pipeline.tasks.kinds import ccc_torch
from pipeline.training.losses import balanced_weights, multitask_loss, task_loss

FRAME_TASKS = get_tasks(["expr", "au", "va"])


def _batch(rng, n=16):
    outputs = {t.name: torch.randn(n, t.num_outputs, requires_grad=True) for t in FRAME_TASKS}
    expr = torch.as_tensor(rng.integers(0, 8, n))
    au = torch.as_tensor(rng.integers(0, 2, (n, 12))).float()
    va = torch.as_tensor(rng.uniform(-1, 1, (n, 2))).float()
    expr[:4] = -1
    au[4:8, 3] = -1  # one invalid AU invalidates the row
    va[8:10] = -5
    return outputs, {"expr": expr, "au": au, "va": va}


def test_losses_ignore_invalid_rows():
    rng = np.random.default_rng(0)
    outputs, targets = _batch(rng)
    total, parts = multitask_loss(FRAME_TASKS, outputs, targets)
    # Changing the outputs on invalid rows cannot change the loss.
    changed = {k: v.detach().clone() for k, v in outputs.items()}
    changed["expr"][:4] += 3.0
    changed["au"][4:8] -= 2.0
    changed["va"][8:10] = 0.9
    total2, parts2 = multitask_loss(FRAME_TASKS, changed, targets)
    assert parts == pytest.approx(parts2)
    assert float(total.detach()) == pytest.approx(float(total2))
    # The invalid rows really are the ones ignored: reference on the valid rows only.
    assert parts["expr"] == pytest.approx(
        torch.nn.functional.cross_entropy(outputs["expr"][4:], targets["expr"][4:]).item()
    )
    total.backward()
    assert torch.all(outputs["expr"].grad[:4] == 0) and torch.any(outputs["expr"].grad[4:] != 0)


def test_loss_on_sequences_with_padding():
    task = TASKS["expr"]
    outputs = torch.randn(2, 5, 8)
    targets = torch.full((2, 5), -1)
    targets[0, :3] = torch.tensor([1, 2, 3])
    flat = task_loss(task, outputs[0, :3], targets[0, :3])
    assert float(task_loss(task, outputs, targets)) == pytest.approx(float(flat))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_no_valid_label_gives_zero_with_grad(name):
    task = TASKS[name]
    outputs = torch.randn(4, task.num_outputs, requires_grad=True)
    shape = (4,) if task.kind == "multiclass" else (4, task.num_outputs)
    loss = task_loss(task, outputs, torch.full(shape, float(task.invalid)))
    assert loss.item() == 0.0
    loss.backward()
    assert outputs.grad is not None


def test_ccc_loss_zero_for_perfect_prediction():
    va = torch.rand(50, 2) * 2 - 1
    assert float(task_loss(TASKS["va"], va.clone(), va)) == pytest.approx(0.0, abs=1e-6)
    centred = va - va.mean(dim=0)
    assert float(task_loss(TASKS["va"], -centred, centred)) == pytest.approx(2.0, abs=1e-5)
    assert torch.allclose(
        ccc_torch(va, va * 0.5),
        2 * 0.5 * va.var(0, unbiased=False) / (1.25 * va.var(0, unbiased=False) + (0.5 * va.mean(0)) ** 2),
        atol=1e-5,
    )


def test_weights_change_the_loss():
    rng = np.random.default_rng(1)
    outputs, targets = _batch(rng)
    expr_w = torch.as_tensor(balanced_weights(TASKS["expr"], targets["expr"].numpy()))
    assert expr_w.shape == (8,)
    plain = task_loss(TASKS["expr"], outputs["expr"], targets["expr"])
    weighted = task_loss(TASKS["expr"], outputs["expr"], targets["expr"], expr_w)
    assert plain.item() != pytest.approx(weighted.item())
    au_w = balanced_weights(TASKS["au"], targets["au"].numpy())
    assert au_w.shape == (12,) and balanced_weights(TASKS["va"], targets["va"].numpy()) is None


def test_balanced_weights_skip_invalid_rows():
    # Invalid rows must not count as a class: weights from [0, 0, 1, -1, -1] equal those from [0, 0, 1].
    expr = TASKS["expr"]
    np.testing.assert_allclose(
        balanced_weights(expr, np.array([0, 0, 1, -1, -1])), balanced_weights(expr, np.array([0, 0, 1]))
    )
    weights = balanced_weights(expr, np.array([0, 0, 1]))
    assert weights[1] == pytest.approx(2 * weights[0])  # the rarer class weighs more


def test_video_task_takes_the_first_labelled_frame_of_each_window():
    task = TASKS["emi"]
    outputs = torch.rand(2, task.num_outputs, requires_grad=True)  # [B, C]: pooled over the window
    label = torch.rand(2, task.num_outputs)
    targets = torch.full((2, 7, task.num_outputs), float(task.invalid))  # [B, T, C] frame rows
    targets[0, 2:] = label[0]  # leading frames unlabelled (no face), then the video label
    targets[1, :5] = label[1]  # trailing padding
    windowed = task_loss(task, outputs, targets)
    assert float(windowed.detach()) == pytest.approx(float(task_loss(task, outputs, label).detach()))
    windowed.backward()
    assert outputs.grad is not None
