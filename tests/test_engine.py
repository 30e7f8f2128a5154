"""Training loops on tiny synthetic problems: the loss falls, predictions beat chance, runs repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pipeline.engine import (
    extract_features,
    finetune_encoder,
    get_lr,
    load_temporal,
    pretrain_mae,
    reconstruction_preview,
    to_tensor_batch,
    train_temporal,
)

from pipeline.models.encoders import load_checkpoint, save_checkpoint
from pipeline.models.sequence import predict_sequence

TINY = {"depth": 2}  # 2-block vit_tiny_112: fast enough for unit tests


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one thread: these tiny models gain nothing from two, and on a shared, busy 2-core machine
    two OpenMP threads per process slow them down ten-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _faces(n: int, seed: int) -> np.ndarray:
    """uint8 [n, 112, 112, 3] cartoon aligned faces (skin ellipse, eyes, mouth) with jitter and noise.

    Like real aligned crops, every image shares one layout, so masked patches are predictable.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32)
    out = np.empty((n, 112, 112, 3), np.uint8)
    for i in range(n):
        dy, dx = rng.normal(0, 2, 2)
        img = 40.0 + rng.normal(0, 8, (112, 112, 3))
        img[((xx - 56 - dx) / 38) ** 2 + ((yy - 58 - dy) / 48) ** 2 < 1] = rng.uniform(120, 220, 3)
        for eye_x in (40, 72):
            img[((xx - eye_x - dx) / 8) ** 2 + ((yy - 45 - dy) / 4) ** 2 < 1] = 20
        img[(np.abs(xx - 56 - dx) < 16) & (np.abs(yy - 82 - dy) < 3 + rng.uniform(0, 4))] = (150, 30, 30)
        out[i] = np.clip(img, 0, 255)
    return out


def _mae(images, seed=0, epochs=4):
    return pretrain_mae(
        images,
        encoder="vit_tiny_112",
        mask_ratio=0.75,
        epochs=epochs,
        batch_size=16,
        lr=3e-3,
        weight_decay=0.05,
        warmup_epochs=1,
        decoder_dim=32,
        decoder_depth=1,
        norm_pix_loss=True,
        seed=seed,
        device="cpu",
        encoder_overrides=TINY,
    )


@pytest.fixture(scope="module")
def pretrained():
    return _mae(_faces(64, 0))


def test_get_lr_warmup_then_cosine():
    assert get_lr(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert get_lr(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert get_lr(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert get_lr(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert get_lr(0, 100, 0, 1.0, 0.0) == pytest.approx(1.0)


def test_to_tensor_batch_normalises_and_augments():
    images = _faces(4, 1)
    x = to_tensor_batch(images, "cpu")
    assert x.shape == (4, 3, 112, 112)
    assert torch.allclose(
        x[0, 0, 0, 0], torch.tensor((images[0, 0, 0, 0] / 255 - 0.485) / 0.229, dtype=torch.float32)
    )
    assert to_tensor_batch(images, "cpu", size=(224, 224)).shape == (4, 3, 224, 224)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = to_tensor_batch(images, "cpu", augment=True, generator=g1)
    assert torch.equal(a, to_tensor_batch(images, "cpu", augment=True, generator=g2))
    assert not torch.equal(a, x)


def test_mae_pretraining_lowers_the_loss(pretrained):
    checkpoint, history = pretrained
    assert len(history) == 4
    assert history[-1]["loss"] < 0.9 * history[0]["loss"]
    assert not any(k.startswith(("decoder_", "mask_token")) for k in checkpoint["model"])
    assert checkpoint["encoder"] == "vit_tiny_112" and checkpoint["encoder_kwargs"]["depth"] == 2


def test_reconstruction_preview_grid(pretrained):
    grid = reconstruction_preview(pretrained[0], _faces(3, 5))
    assert grid.shape == (3 * 112, 3 * 112, 3) and grid.dtype == np.uint8


def _expr_by_colour(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """4 expression classes coded by the dominant colour; VA = brightness; some labels invalid."""
    rng = np.random.default_rng(seed)
    expr = rng.integers(0, 4, n)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    images = palette[expr][:, None, None, :] + rng.normal(0, 20, (n, 112, 112, 3))
    brightness = rng.uniform(0.5, 1.2, n)
    images = np.clip(images * brightness[:, None, None, None], 0, 255).astype(np.uint8)
    va = np.stack([brightness - 0.85, np.zeros(n)], axis=1) * 2
    targets = {"expr": expr.copy(), "va": va}
    targets["expr"][:5] = -1
    targets["va"][5:10] = -5
    return images, targets


def test_finetune_beats_chance_and_features_follow(pretrained, tmp_path):
    images, targets = _expr_by_colour(160, 1)
    val_images, val_targets = _expr_by_colour(64, 2)
    checkpoint, history = finetune_encoder(
        images,
        targets,
        tasks=["expr", "va"],
        init=pretrained[0],
        epochs=3,
        batch_size=16,
        lr=1e-3,
        weight_decay=0.05,
        layer_decay=0.75,
        warmup_epochs=0.5,
        drop_path=0.1,
        seed=0,
        device="cpu",
        val_images=val_images,
        val_targets=val_targets,
    )
    # 8 classes are scored, 4 used: a perfect classifier gets 0.5 mean F1, chance about 0.125.
    assert history[-1]["val_expr_f1"] > 0.3
    assert history[-1]["val_va_ccc"] > 0.3
    assert history[-1]["loss"] < history[0]["loss"]

    save_checkpoint(checkpoint, tmp_path / "finetune.pt")
    loaded = load_checkpoint(tmp_path / "finetune.pt")  # weights_only: only plain types inside
    features = extract_features(val_images, loaded, batch_size=32, device="cpu")
    assert features.shape == (64, loaded["feature_dim"]) and features.dtype == np.float32
    # Colour classes should separate in feature space: nearest class mean beats chance clearly.
    labels = val_targets["expr"]
    keep = labels >= 0
    means = np.stack([features[keep & (labels == c)].mean(0) for c in range(4)])
    nearest = np.argmin(((features[keep, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels[keep]).mean() > 0.5


def test_mae_pretraining_is_deterministic():
    images = _faces(32, 3)
    first, h1 = _mae(images, seed=7, epochs=1)
    second, h2 = _mae(images, seed=7, epochs=1)
    other, _ = _mae(images, seed=8, epochs=1)
    assert h1[0]["loss"] == h2[0]["loss"]
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    assert not torch.equal(
        first["model"]["blocks.0.attn.qkv.weight"], other["model"]["blocks.0.attn.qkv.weight"]
    )


def _temporal_problem(n_seqs: int, seed: int, dim: int = 16):
    """EXPR = argmax of the first 4 features averaged over +-4 frames (needs temporal context);
    AU = sign of features 4..6; VA = tanh of feature 7, arousal constant-free noise."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_seqs):
        length = int(rng.integers(60, 140))
        feats = rng.normal(size=(length, dim)).astype(np.float32)
        kernel = np.ones(9) / 9
        smooth = np.stack([np.convolve(feats[:, c], kernel, mode="same") for c in range(4)], axis=1)
        expr = smooth.argmax(axis=1)
        au = np.zeros((length, 12), dtype=np.int64)
        au[:, :3] = feats[:, 4:7] > 0
        va = np.stack([np.tanh(feats[:, 7]), np.tanh(feats[:, 8])], axis=1)
        expr[:3] = -1
        au[10:12] = -1
        va[20:25] = -5
        seqs.append((feats, {"expr": expr, "au": au, "va": va}))
    return seqs


def _train_temporal(seqs, model="tcn_transformer", seed=0, epochs=20, val_seqs=None):
    return train_temporal(
        seqs,
        tasks=["expr", "au", "va"],
        model=model,
        model_kwargs={"hidden": 32, "tcn_levels": 2, "transformer_layers": 1, "heads": 2, "dropout": 0.1},
        window=32,
        stride=16,
        epochs=epochs,
        batch_size=8,
        lr=3e-3,
        weight_decay=1e-5,
        warmup_epochs=1,
        seed=seed,
        device="cpu",
        feature_noise=0.05,
        val_seqs=val_seqs,
    )


def test_temporal_training_beats_chance_and_predicts_sequences(tmp_path):
    train, val = _temporal_problem(12, 0), _temporal_problem(4, 1)
    checkpoint, history = _train_temporal(train, val_seqs=val)
    last = history[-1]
    assert last["val_expr_f1"] > 0.2  # 4 of 8 classes used: chance about 0.06, perfect 0.5
    assert last["val_va_ccc"] > 0.5
    assert last["loss"] < history[0]["loss"]
    # EXPR here depends on +-4 frames: the per-frame ablation cannot match the temporal model.
    _, mlp_history = _train_temporal(train, model="mlp", val_seqs=val)
    assert mlp_history[-1]["val_expr_f1"] < last["val_expr_f1"] - 0.05
    save_checkpoint(checkpoint, tmp_path / "temporal.pt")
    model = load_temporal(load_checkpoint(tmp_path / "temporal.pt"))
    assert torch.allclose(
        model.feature_mean, torch.as_tensor(np.concatenate([f for f, _ in train]).mean(0)), atol=1e-5
    )
    preds = predict_sequence(model, val[0][0], window=32, stride=16)
    assert preds["expr"].shape == (len(val[0][0]), 8)
    assert np.allclose(preds["expr"].sum(axis=1), 1.0, atol=1e-5)
    assert preds["au"].shape == (len(val[0][0]), 12) and preds["va"].shape == (len(val[0][0]), 2)


def test_temporal_training_is_deterministic():
    seqs = _temporal_problem(4, 2)
    first, _ = _train_temporal(seqs, seed=3, epochs=2)
    second, _ = _train_temporal(seqs, seed=3, epochs=2)
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
