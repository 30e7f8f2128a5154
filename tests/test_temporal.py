"""Temporal models, windowing, overlap averaging and the per-task losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.models.sequence import TEMPORAL_MODELS, create_temporal_model, predict_sequence, windows
from pipeline.tasks.definitions import TASKS
from pipeline.training.losses import balanced_weights, ccc, multitask_loss, task_loss

ALL_TASKS = list(TASKS.values())
SMALL = {"hidden": 16, "tcn_levels": 2, "kernel_size": 3, "transformer_layers": 1, "heads": 2, "dropout": 0.1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one thread: these tiny models gain nothing from two, and on a shared, busy 2-core machine
    two OpenMP threads per process slow them down ten-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(TEMPORAL_MODELS))
def test_output_shapes_per_task(name):
    model = create_temporal_model(name, 10, ALL_TASKS, **SMALL).eval()
    pad_mask = torch.zeros(3, 20, dtype=torch.bool)
    pad_mask[1, 15:] = True
    out = model(torch.randn(3, 20, 10), pad_mask)
    assert set(out) == {"expr", "au", "va"}
    for task in ALL_TASKS:
        assert out[task.name].shape == (3, 20, task.num_outputs)
        assert torch.isfinite(out[task.name]).all()
    assert out["va"].abs().max() <= 1  # tanh


@pytest.mark.parametrize("name", ["tcn_transformer", "tcn", "transformer"])
def test_padding_does_not_change_valid_frames(name):
    model = create_temporal_model(name, 6, ALL_TASKS, **SMALL).eval()
    x = torch.randn(1, 12, 6)
    padded = torch.cat([x, 100 * torch.randn(1, 5, 6)], dim=1)
    pad_mask = torch.zeros(1, 17, dtype=torch.bool)
    pad_mask[:, 12:] = True
    with torch.no_grad():
        plain, masked = model(x), model(padded, pad_mask)
    for task in ALL_TASKS:
        assert torch.allclose(masked[task.name][:, :12], plain[task.name], atol=1e-5)


def test_temporal_context_matters_only_for_temporal_models():
    x = torch.randn(1, 16, 6)
    x2 = x.clone()
    x2[0, 10] += 10.0  # change one frame
    with torch.no_grad():
        mlp = create_temporal_model("mlp", 6, ALL_TASKS, **SMALL).eval()
        assert torch.equal(mlp(x)["expr"][0, 9], mlp(x2)["expr"][0, 9])
        tcn = create_temporal_model("tcn_transformer", 6, ALL_TASKS, **SMALL).eval()
        assert not torch.allclose(tcn(x)["expr"][0, 9], tcn(x2)["expr"][0, 9])


def test_unknown_model_is_rejected():
    with pytest.raises(KeyError, match="tcn_transformer"):
        create_temporal_model("lstm", 4, ALL_TASKS)


@pytest.mark.parametrize(
    ("n", "window", "stride"),
    [(1, 5, 2), (5, 5, 2), (7, 5, 2), (20, 6, 4), (300, 300, 200), (1001, 300, 200)],
)
def test_windows_cover_every_frame(n, window, stride):
    spans = windows(n, window, stride)
    covered = np.zeros(n, dtype=int)
    for start, end in spans:
        assert 0 <= start < end <= n
        assert end - start == min(window, n)
        covered[start:end] += 1
    assert covered.min() >= 1
    assert spans[-1][1] == n and spans[0][0] == 0


def test_windows_reject_gaps_and_handle_empty():
    assert windows(0, 5, 2) == []
    with pytest.raises(ValueError):
        windows(10, 4, 5)


class ConstantModel(nn.Module):
    """Predicts fixed logits/values everywhere: averaging must give back exactly their activations."""

    def __init__(self):
        super().__init__()
        self.tasks = ALL_TASKS
        self.logits = {t.name: torch.linspace(-1, 1, t.num_outputs) for t in ALL_TASKS}

    def forward(self, x, pad_mask=None):
        return {k: v.expand(x.shape[0], x.shape[1], -1) for k, v in self.logits.items()}


class FrameSum(nn.Module):
    """Per-frame output = sum of that frame's features: window-independent, so averaging is exact."""

    tasks = [TASKS["va"]]

    def forward(self, x, pad_mask=None):
        return {"va": x.sum(dim=-1, keepdim=True).expand(-1, -1, 2)}


def test_overlap_averaging_is_exact():
    model = ConstantModel()
    out = predict_sequence(model, np.zeros((23, 4), np.float32), window=6, stride=4)
    assert np.allclose(out["expr"], torch.softmax(model.logits["expr"], 0).numpy()[None].repeat(23, 0))
    assert np.allclose(out["au"], torch.sigmoid(model.logits["au"]).numpy()[None].repeat(23, 0))
    assert np.allclose(out["va"], model.logits["va"].numpy()[None].repeat(23, 0))
    feats = np.random.default_rng(0).normal(size=(23, 3)).astype(np.float32)
    out = predict_sequence(FrameSum(), feats, window=6, stride=4, batch_size=2)
    assert np.allclose(out["va"][:, 0], feats.sum(axis=1), atol=1e-6)


def test_model_normalization_is_applied_and_saved():
    model = create_temporal_model("mlp", 3, ALL_TASKS, **SMALL).eval()
    x = torch.randn(1, 4, 3)
    with torch.no_grad():
        before = model(x)["expr"]
        model.set_normalization(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0]))
        after = model(x * 2 + torch.tensor([1.0, 2.0, 3.0]))["expr"]
    assert torch.allclose(before, after, atol=1e-5)
    assert "feature_mean" in model.state_dict() and "feature_std" in model.state_dict()


# ---- losses ------------------------------------------------------------------------------------------


def _batch(rng, n=16):
    outputs = {t.name: torch.randn(n, t.num_outputs, requires_grad=True) for t in ALL_TASKS}
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
    total, parts = multitask_loss(ALL_TASKS, outputs, targets)
    # Changing the outputs on invalid rows cannot change the loss.
    changed = {k: v.detach().clone() for k, v in outputs.items()}
    changed["expr"][:4] += 3.0
    changed["au"][4:8] -= 2.0
    changed["va"][8:10] = 0.9
    total2, parts2 = multitask_loss(ALL_TASKS, changed, targets)
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


def test_no_valid_label_gives_zero_with_grad():
    for task in ALL_TASKS:
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
        ccc(va, va * 0.5),
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
