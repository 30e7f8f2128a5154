"""The one fit loop: schedule, parameter groups, batch order, determinism, resuming, EMA, loss guard."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.models.encoders import create_encoder
from pipeline.training.loop import EMA, FitConfig, batches, fit, get_lr, param_groups, steps_per_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_get_lr_warmup_then_cosine():
    assert get_lr(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert get_lr(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert get_lr(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert get_lr(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert get_lr(0, 100, 0, 1.0, 0.0) == pytest.approx(1.0)


def test_schedule_spans_every_optimizer_step_with_accumulation(monkeypatch):
    """3 batches per epoch, accumulation 2: steps after batches 2 and 3, so 4 steps in 2 epochs."""
    lrs = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    model = nn.Linear(1, 1)
    config = FitConfig(
        epochs=2, batch_size=4, lr=1.0, weight_decay=0.0, warmup_epochs=0.5, seed=0, accumulation=2
    )
    _, history = fit(model, lambda idx: (model(torch.ones(len(idx), 1)).pow(2).mean(), {}), 12, config)
    # One warm-up step, then the half cosine over the 3 others: it ends above min_lr, never at 0 early.
    assert lrs == pytest.approx([1.0, 1.0, 0.75, 0.25])
    assert history[-1]["lr"] == pytest.approx(0.25)


class Wrapped(nn.Module):
    """A fine-tune-like model: a ViT under `encoder.` and a head on top."""

    def __init__(self):
        super().__init__()
        self.encoder = create_encoder("vit_tiny_112", depth=2)
        self.head = nn.Linear(192, 3)


def test_param_groups_skip_decay_on_biases_and_tokens_and_decay_lr_by_depth():
    model = Wrapped()
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5, num_layers=2)
    owner = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(named)

    def group(name):
        return owner[id(named[name])]

    assert group("encoder.blocks.0.attn.qkv.bias")["weight_decay"] == 0.0
    assert group("encoder.blocks.0.norm1.weight")["weight_decay"] == 0.0
    assert group("encoder.cls_token")["weight_decay"] == 0.0
    assert group("encoder.blocks.0.attn.qkv.weight")["weight_decay"] == 0.05
    # Embeddings deepest decay, then block by block, the head and final norm at full lr.
    assert group("encoder.patch_embed.proj.weight")["lr_scale"] == pytest.approx(0.5**3)
    assert group("encoder.blocks.0.attn.qkv.weight")["lr_scale"] == pytest.approx(0.5**2)
    assert group("encoder.blocks.1.attn.qkv.weight")["lr_scale"] == pytest.approx(0.5)
    assert group("head.weight")["lr_scale"] == 1.0 and group("encoder.norm.weight")["lr_scale"] == 1.0
    # Without layer decay: two groups (decay / no decay) at full lr.
    plain = param_groups(model, weight_decay=0.05)
    assert len(plain) == 2 and all(g["lr_scale"] == 1.0 for g in plain)
    # Frozen parameters are left out.
    model.head.weight.requires_grad_(False)
    assert sum(len(g["params"]) for g in param_groups(model, 0.05)) == len(named) - 1


def test_batches_shuffle_sort_and_drop_the_last_partial_batch():
    rng = np.random.default_rng(0)
    dropped = list(batches(10, 4, rng))
    assert [len(b) for b in dropped] == [4, 4] and steps_per_epoch(10, 4) == 2
    assert all((np.diff(b) > 0).all() for b in dropped)
    assert len(set(np.concatenate(dropped))) == 8
    kept = list(batches(10, 4, rng, drop_last=False))
    assert sorted(np.concatenate(kept).tolist()) == list(range(10)) and steps_per_epoch(10, 4, False) == 3
    assert [len(b) for b in batches(3, 4, rng)] == [3]  # the only batch is kept even when partial
    epoch_1, epoch_2 = list(batches(20, 5, rng)), list(batches(20, 5, rng))
    assert not np.array_equal(epoch_1[0], epoch_2[0])  # a new order every epoch


def _problem(seed: int = 0, n: int = 64):
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.normal(size=(n, 5)), dtype=torch.float32)
    y = x @ torch.as_tensor(rng.normal(size=(5, 1)), dtype=torch.float32)
    return x, y


CONFIG = FitConfig(epochs=4, batch_size=8, lr=5e-2, weight_decay=1e-4, warmup_epochs=1.0, seed=0)


def _run(config: FitConfig = CONFIG, resume_path=None, fail_at_epoch: int | None = None):
    """A small regression net with dropout and noise from torch's global RNG (both must be reseeded)."""
    x, y = _problem()
    torch.manual_seed(123)  # init, independent of the fit seed
    model = nn.Sequential(nn.Linear(5, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 1))
    calls = {"n": 0}

    def step(idx):
        calls["n"] += 1
        if fail_at_epoch is not None and calls["n"] > fail_at_epoch * steps_per_epoch(
            len(x), config.batch_size
        ):
            raise KeyboardInterrupt  # a crash in the middle of an epoch
        noisy = x[idx] + 0.01 * torch.randn(len(idx), 5)
        loss = ((model(noisy) - y[idx]) ** 2).mean()
        return loss, {"mse": float(loss.detach())}

    model, history = fit(model, step, len(x), config, resume_path=resume_path)
    return model, history


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_fit_lowers_the_loss_and_is_deterministic():
    first, history = _run()
    second, again = _run()
    other, _ = _run(dataclasses.replace(CONFIG, seed=1))
    assert len(history) == 4 and history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert set(history[0]) == {"epoch", "loss", "loss_mse", "lr"}  # no wall-clock values
    assert history == again and _same_weights(first, second)
    assert not _same_weights(first, other)


def test_fit_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    straight, history = _run()
    path = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(resume_path=path, fail_at_epoch=2)
    assert torch.load(path, weights_only=False)["epoch"] == 1  # epochs 0 and 1 were saved
    resumed, resumed_history = _run(resume_path=path)
    assert _same_weights(straight, resumed)
    assert resumed_history == history


def test_ema_follows_the_weights_slowly():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, start + 0.1)
    assert not ema.model.weight.requires_grad
    averaged, _ = _run(dataclasses.replace(CONFIG, ema_decay=0.5))
    plain, _ = _run()
    assert not averaged.training and not _same_weights(averaged, plain)


def test_non_finite_loss_stops_training():
    model = nn.Linear(1, 1)

    def step(idx):
        return model(torch.ones(len(idx), 1)).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="loss is nan"):
        fit(model, step, 8, dataclasses.replace(CONFIG, epochs=1))
    with pytest.raises(ValueError, match="accumulation"):
        fit(model, step, 8, dataclasses.replace(CONFIG, accumulation=0))
