"""Training loops on tiny synthetic problems: the loss falls, predictions beat chance, runs repeat."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.config import load_config
from pipeline.features.sequences import TrackSequence
from pipeline.inference.images import extract_features
from pipeline.inference.sequences import predict_sequence
from pipeline.models.encoders import load_checkpoint, save_checkpoint
from pipeline.models.finetune import FinetuneModel
from pipeline.models.sequence import model_from_checkpoint
from pipeline.training.finetune import finetune_encoder, predict_images
from pipeline.training.pretrain import load_mae, pretrain_mae, reconstruction_preview
from pipeline.training.sequence import train_sequence_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "params.yaml")
TINY = {"depth": 2}  # 2-block vit_tiny_112: fast enough for unit tests


pytestmark = pytest.mark.usefixtures("one_thread")


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
    config = dataclasses.replace(
        CONFIG.pretrain,
        encoder="vit_tiny_112",
        mask_ratio=0.75,
        epochs=epochs,
        batch_size=16,
        lr=3e-3,
        weight_decay=0.05,
        warmup_epochs=1.0,
        decoder_dim=32,
        decoder_depth=1,
        norm_pix_loss=True,
        seed=seed,
    )
    return pretrain_mae(images, config, device="cpu", encoder_overrides=TINY)


@pytest.fixture(scope="module")
def pretrained():
    return _mae(_faces(64, 0))


def test_mae_pretraining_lowers_the_loss(pretrained):
    checkpoint, history = pretrained
    assert len(history) == 4
    assert history[-1]["loss"] < 0.9 * history[0]["loss"]
    assert not any(k.startswith(("decoder_", "mask_token")) for k in checkpoint["model"])
    assert checkpoint["encoder"] == "vit_tiny_112" and checkpoint["encoder_kwargs"]["depth"] == 2
    assert checkpoint["config"]["mask_ratio"] == 0.75 and checkpoint["config"]["num_images"] == 64


def test_mae_checkpoint_round_trip(pretrained, tmp_path):
    save_checkpoint(pretrained[0], tmp_path / "mae.pt")
    mae = load_mae(load_checkpoint(tmp_path / "mae.pt"))  # weights_only: only plain types inside
    for key, value in pretrained[0]["model"].items():
        assert torch.equal(mae.encoder.state_dict()[key], value), key
    with pytest.raises(KeyError, match="not a pretrain_mae checkpoint"):
        load_mae({k: v for k, v in pretrained[0].items() if k != "mae"})


def test_reconstruction_preview_grid(pretrained):
    grid = reconstruction_preview(pretrained[0], _faces(3, 5))
    assert grid.shape == (3 * 112, 3 * 112, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid, reconstruction_preview(pretrained[0], _faces(3, 5)))  # seeded masks


def _expr_by_colour(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """4 expression classes coded by the dominant colour; VA = brightness; some labels invalid."""
    rng = np.random.default_rng(seed)
    expr = rng.integers(0, 4, n)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    images = palette[expr][:, None, None, :] + rng.normal(0, 20, (n, 112, 112, 3))
    brightness = rng.uniform(0.5, 1.2, n)
    images = np.clip(images * brightness[:, None, None, None], 0, 255).astype(np.uint8)
    va = (np.stack([brightness - 0.85, np.zeros(n)], axis=1) * 2).astype(np.float32)
    targets = {"expr": expr.copy(), "va": va}
    targets["expr"][:5] = -1
    targets["va"][5:10] = -5
    return images, targets


def _finetune_config(**changes):
    defaults = dict(
        tasks=("expr", "va"),
        epochs=3,
        batch_size=16,
        lr=1e-3,
        weight_decay=0.05,
        layer_decay=0.75,
        warmup_epochs=0.5,
        drop_path=0.1,
        frozen_blocks=0,
        clip_grad=1.0,
        accumulation=1,
        ema_decay=0.0,
        class_balance=False,
        seed=0,
    )
    return dataclasses.replace(CONFIG.finetune, **(defaults | changes))


def test_finetune_beats_chance_and_features_follow(pretrained, tmp_path):
    images, targets = _expr_by_colour(160, 1)
    val_images, val_targets = _expr_by_colour(64, 2)
    checkpoint, history = finetune_encoder(
        images,
        targets,
        _finetune_config(),
        init=pretrained[0],
        device="cpu",
        val_images=val_images,
        val_targets=val_targets,
    )
    # 8 classes are scored, 4 used: a perfect classifier gets 0.5 mean F1, chance about 0.125.
    assert history[-1]["val_expr_f1"] > 0.3
    assert history[-1]["val_va_ccc"] > 0.3
    assert history[-1]["loss"] < history[0]["loss"]
    assert checkpoint["tasks"] == ["expr", "va"] and checkpoint["config"]["init_encoder"] == "vit_tiny_112"

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


def test_finetune_from_scratch_with_ema_and_accumulation():
    """The ablation without pretraining, and the EMA / accumulation / class-balance paths of the loop."""
    images, targets = _expr_by_colour(48, 3)
    config = _finetune_config(epochs=1, ema_decay=0.9, accumulation=2, class_balance=True, tasks=("expr",))
    checkpoint, history = finetune_encoder(
        images, targets, config, init=None, encoder="vit_tiny_112", encoder_overrides={"depth": 1}
    )
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert checkpoint["config"]["init_encoder"] is None and checkpoint["encoder_kwargs"]["depth"] == 1
    with pytest.raises(ValueError, match="init checkpoint or an encoder"):
        finetune_encoder(images, targets, config, init=None)
    with pytest.raises(KeyError, match="no targets"):
        finetune_encoder(images, {}, config, init=None, encoder="vit_tiny_112")


def test_split_vit_equals_the_whole_encoder():
    from pipeline.inference.images import to_tensor_batch
    from pipeline.models.encoders import create_encoder
    from pipeline.models.split_vit import lower_tokens, upper_features

    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_112", depth=3).eval()
    x = to_tensor_batch(_faces(4, 9), "cpu", size=(112, 112))
    with torch.no_grad():
        whole = encoder(x)
        for frozen in (0, 1, 3):
            split = upper_features(encoder, lower_tokens(encoder, x, frozen), frozen)
            assert torch.allclose(split, whole, atol=1e-5)


def test_partial_finetuning_trains_the_top_blocks_only(pretrained):
    images, targets = _expr_by_colour(64, 5)
    init = pretrained[0]
    depth = int(init["encoder_kwargs"]["depth"])
    config = _finetune_config(epochs=2, frozen_blocks=depth - 1, tasks=("expr",))
    checkpoint, history = finetune_encoder(images, targets, config, init=init)
    assert history[-1]["loss"] < history[0]["loss"]
    before, after = init["model"], checkpoint["model"]
    for name in ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.attn.qkv.weight"):
        assert torch.equal(before[name], after[name]), f"{name} is frozen but changed"
    top = f"blocks.{depth - 1}.mlp.fc1.weight"
    assert not torch.equal(before[top], after[top]), "the top block did not train"
    with pytest.raises(ValueError, match="frozen_blocks must be in"):
        too_many = _finetune_config(frozen_blocks=depth + 1, tasks=("expr",))
        finetune_encoder(images, targets, too_many, init=init)


def test_predict_images_gives_probabilities(pretrained):
    from pipeline.models.encoders import encoder_from_checkpoint
    from pipeline.tasks.definitions import get_tasks

    model = FinetuneModel(encoder_from_checkpoint(pretrained[0]), get_tasks(["expr", "au", "va"])).train()
    out = predict_images(model, _faces(5, 4), batch_size=2, device="cpu")
    assert model.training  # mode restored
    assert out["expr"].shape == (5, 8) and np.allclose(out["expr"].sum(axis=1), 1.0, atol=1e-5)
    assert out["au"].shape == (5, 12) and ((out["au"] >= 0) & (out["au"] <= 1)).all()
    assert out["va"].shape == (5, 2) and (np.abs(out["va"]) <= 1).all()


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


def _temporal_problem(n_seqs: int, seed: int, dim: int = 16) -> list[TrackSequence]:
    """EXPR = argmax of the first 4 features averaged over +-4 frames (needs temporal context);
    AU = sign of features 4..6; VA = tanh of features 7 and 8."""
    rng = np.random.default_rng(seed)
    seqs = []
    for i in range(n_seqs):
        length = int(rng.integers(60, 140))
        feats = rng.normal(size=(length, dim)).astype(np.float32)
        kernel = np.ones(9) / 9
        smooth = np.stack([np.convolve(feats[:, c], kernel, mode="same") for c in range(4)], axis=1)
        expr = smooth.argmax(axis=1)
        au = np.zeros((length, 12), dtype=np.int64)
        au[:, :3] = feats[:, 4:7] > 0
        va = np.stack([np.tanh(feats[:, 7]), np.tanh(feats[:, 8])], axis=1).astype(np.float32)
        expr[:3] = -1
        au[10:12] = -1
        va[20:25] = -5
        targets = {"expr": expr, "au": au, "va": va}
        seqs.append(TrackSequence(f"track_{seed}_{i}", {"face": feats}, targets=targets))
    return seqs


def _train_config(model="tcn_transformer", epochs=20, **changes):
    defaults = dict(
        tasks=("expr", "au", "va"),
        model=model,
        model_kwargs={"hidden": 32, "tcn_levels": 2, "transformer_layers": 1, "heads": 2, "dropout": 0.1},
        window=32,
        stride=16,
        epochs=epochs,
        batch_size=8,
        lr=3e-3,
        weight_decay=1e-5,
        warmup_epochs=1.0,
        clip_grad=1.0,
        feature_noise=0.05,
        track_features="raw",
        class_balance=False,
    )
    return dataclasses.replace(CONFIG.train, **(defaults | changes))


def test_sequence_training_beats_chance_and_predicts_sequences(tmp_path):
    train, val = _temporal_problem(12, 0), _temporal_problem(4, 1)
    checkpoint, history = train_sequence_model(train, _train_config(), seed=0, val=val)
    last = history[-1]
    assert last["val_expr_f1"] > 0.2  # 4 of 8 classes used: chance about 0.06, perfect 0.5
    assert last["val_va_ccc"] > 0.5
    assert last["loss"] < history[0]["loss"]
    # EXPR here depends on +-4 frames: the per-frame ablation cannot match the temporal model.
    _, mlp_history = train_sequence_model(train, _train_config("mlp"), seed=0, val=val)
    assert mlp_history[-1]["val_expr_f1"] < last["val_expr_f1"] - 0.05
    save_checkpoint(checkpoint, tmp_path / "temporal.pt")
    model = model_from_checkpoint(load_checkpoint(tmp_path / "temporal.pt"))
    assert [spec.name for spec in model.inputs] == ["face"]
    assert torch.allclose(
        model.embed.face_mean,
        torch.as_tensor(np.concatenate([s.streams["face"] for s in train]).mean(0)),
        atol=1e-5,
    )
    preds = predict_sequence(model, val[0], window=32, stride=16)
    n = val[0].n_frames
    assert preds["expr"].shape == (n, 8)
    assert np.allclose(preds["expr"].sum(axis=1), 1.0, atol=1e-5)
    assert preds["au"].shape == (n, 12) and preds["va"].shape == (n, 2)


def test_sequence_training_is_deterministic():
    seqs = _temporal_problem(4, 2)
    config = _train_config(epochs=2, class_balance=True)
    first, h1 = train_sequence_model(seqs, config, seed=3)
    second, h2 = train_sequence_model(seqs, config, seed=3)
    other, _ = train_sequence_model(seqs, config, seed=4)
    assert h1 == h2 and first["config"]["seed"] == 3
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    assert any(not torch.equal(value, other["model"][key]) for key, value in first["model"].items())


def test_sequence_training_needs_targets_of_every_task():
    seqs = _temporal_problem(1, 3)
    del seqs[0].targets["au"]
    with pytest.raises(KeyError, match="no targets for tasks"):
        train_sequence_model(seqs, _train_config(epochs=1), seed=0)
    with pytest.raises(ValueError, match="at least one training track"):
        train_sequence_model([], _train_config(epochs=1), seed=0)
