"""Training loops: MAE pretraining, encoder fine-tuning, feature extraction, temporal training.

Written to be read top to bottom (nanoGPT / MAE-reference style): per-step warm-up + cosine learning rate,
AdamW without weight decay on biases, norms and tokens, optional layer-wise lr decay, gradient clipping,
a guard against non-finite losses, bf16 autocast on CUDA only, and one history dict of floats per epoch.

Determinism: every loop seeds torch's global RNG (dropout, drop path, MAE masks, feature noise), draws
the batch order from a numpy Generator and augmentation from a torch Generator, all from `seed`; on CPU
two runs with the same arguments give identical weights.

Images arrive as uint8 [N, H, W, 3] RGB arrays; `to_tensor_batch` converts a batch on the device, resizes it
to the encoder's input size and normalises it with the ImageNet statistics (as the MAE reference does).

Checkpoints are dicts of tensors and plain values (see `pipeline.models.encoders`):
- pretrain: `{"model": encoder state, "encoder", "encoder_kwargs", "feature_dim", "config",
  "mae": {"kwargs", "state"}}` where `mae` holds the decoder (for previews; encoder loaders ignore it);
- fine-tune: `{"model": encoder state, "encoder", "encoder_kwargs", "feature_dim", "config", "tasks",
  "heads"}`;
- temporal: `{"model": state incl. feature_mean / feature_std, "temporal", "temporal_kwargs", "config"}`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.evaluation import metrics
from pipeline.models.encoders import (
    create_encoder,
    encoder_from_checkpoint,
    encoder_kwargs,
    feature_dim,
    load_encoder_checkpoint,
)
from pipeline.training.losses import balanced_weights, multitask_loss
from pipeline.models.mae import MaskedAutoencoder
from pipeline.tasks.definitions import Task, get_task
from pipeline.models.sequence import (
    TaskHeads,
    TemporalModel,
    create_temporal_model,
    predict_sequence,
    task_probabilities,
    windows,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch's global RNG and return a numpy Generator for batch order."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def get_lr(step: int, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up for `warmup` steps, then half-cosine from base_lr down to min_lr at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def _layer_id(name: str, num_layers: int) -> int:
    """Depth of a ViT parameter for layer-wise lr decay: embeddings 0, block i -> i + 1, the rest on top."""
    name = name.removeprefix("encoder.")
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float = 1.0, num_layers: int = 0
) -> list[dict[str, Any]]:
    """AdamW parameter groups with an `lr_scale` each (the schedule multiplies it in).

    Biases, norm weights and tokens get no weight decay (MAE reference). With `layer_decay` < 1, a ViT
    parameter at depth d gets lr_scale = layer_decay ** (num_layers + 1 - d) (BEiT / MAE fine-tuning).
    Frozen parameters are left out.
    """
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.split(".")[-1] in ("cls_token", "pos_embed", "mask_token")
        layer = _layer_id(name, num_layers) if layer_decay != 1.0 else 0
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer) if layer_decay != 1.0 else 1.0
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
        groups[key]["params"].append(param)
    return list(groups.values())


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, model: nn.Module, clip_grad: float | None
) -> float:
    """Check the loss is finite, backpropagate, clip, step. Returns the loss as a float."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value}; stopping (lower the lr or check the inputs)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    return value


def batches(n: int, batch_size: int, rng: np.random.Generator, desc: str = "") -> Iterator[np.ndarray]:
    """Shuffled index batches with a progress bar (hidden when not on a tty).

    The last partial batch is dropped unless it is the only one (a tiny last batch gives noisy CCC and
    batch statistics); the order changes every epoch, so every sample is still seen.
    """
    order = rng.permutation(n)
    for step in tqdm(range(steps_per_epoch(n, batch_size)), desc=desc, disable=None):
        yield np.sort(order[step * batch_size : (step + 1) * batch_size])  # sorted: faster on memmaps


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


def state_on_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (safe to save while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


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


def to_tensor_batch(
    images: np.ndarray,
    device: str | torch.device,
    *,
    size: Sequence[int] | None = None,
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 [N, H, W, 3] RGB -> normalised float [N, 3, size] on the device.

    The uint8 array travels to the device first (4x less to copy than float). Augmentation, when asked,
    happens before the resize and the normalisation.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if augment:
        x = augment_batch(x, generator)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _input_size(encoder: nn.Module) -> tuple[int, int]:
    return tuple(int(s) for s in encoder.patch_embed.img_size)


def evaluate_predictions(
    tasks: Sequence[Task], preds: dict[str, np.ndarray], targets: dict[str, np.ndarray]
) -> dict[str, float]:
    """Validation scores for monitoring, with the official metrics of `pipeline.metrics`.

    multiclass: mean F1 over all classes of the argmax; multilabel: mean F1 at a fixed 0.5 threshold (no
    threshold tuning here); regression: mean CCC. A task without labelled rows is left out (no NaN).

    Args:
        preds: task -> [N, C] probabilities or values (as `task_probabilities` gives).
        targets: task -> [N] or [N, C] with invalid markers.

    Returns:
        {"<task>_f1" or "<task>_ccc": score}.
    """
    scores = {}
    for task in tasks:
        pred, true = np.asarray(preds[task.name]), np.asarray(targets[task.name])
        if not task.valid_mask(true).any():
            continue
        if task.kind == "multiclass":
            scores[f"{task.name}_f1"] = metrics.expr_f1(pred.argmax(axis=1), true, task.num_outputs)["f1"]
        elif task.kind == "multilabel":
            scores[f"{task.name}_f1"] = metrics.au_f1((pred >= 0.5).astype(np.int64), true)["f1"]
        else:
            scores[f"{task.name}_ccc"] = metrics.va_score(pred, true)["mean"]
    return scores


# ----------------------------------------------------------------------------------------------------------
# MAE pretraining


def pretrain_mae(
    images: np.ndarray,
    *,
    encoder: str,
    mask_ratio: float,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: float,
    decoder_dim: int,
    decoder_depth: int,
    norm_pix_loss: bool,
    seed: int,
    device: str,
    decoder_heads: int = 4,
    min_lr: float = 0.0,
    clip_grad: float | None = None,
    encoder_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Pretrain an encoder as a masked autoencoder on face crops.

    Args:
        images: uint8 [N, H, W, 3] RGB crops (resized to the encoder's input size on the fly).
        encoder: registry name (`pipeline.models.encoders.ENCODERS`).
        mask_ratio: fraction of patches masked (0.75 in the seeds).
        epochs: passes over the images.
        batch_size: images per step.
        lr: peak learning rate (absolute; the reference's blr * batch / 256 rule is left to the caller).
        weight_decay: AdamW weight decay (0.05 in the reference).
        warmup_epochs: linear warm-up length, may be fractional.
        decoder_dim: decoder width; decoder_depth: decoder blocks; decoder_heads: decoder heads.
        norm_pix_loss: per-patch normalised pixel targets.
        seed: seeds masks, init and batch order.
        device: "cpu" or "cuda[:i]".
        min_lr: floor of the cosine schedule.
        clip_grad: max gradient norm (None: no clipping, as the reference pretrains).
        encoder_overrides: architecture kwargs replacing the registry entry's (e.g. `img_size`, `depth`);
            saved in the checkpoint's `encoder_kwargs`.

    Returns:
        checkpoint (encoder weights in timm naming + decoder under "mae"), history (one dict per epoch:
        epoch, loss, lr, seconds, images_per_s).
    """
    config = {
        "encoder": encoder,
        "mask_ratio": mask_ratio,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "decoder_dim": decoder_dim,
        "decoder_depth": decoder_depth,
        "decoder_heads": decoder_heads,
        "norm_pix_loss": norm_pix_loss,
        "seed": seed,
        "min_lr": min_lr,
        "clip_grad": clip_grad,
        "num_images": int(len(images)),
        "encoder_overrides": dict(encoder_overrides or {}),
    }
    rng = seed_everything(seed)
    arch_kwargs = encoder_kwargs(encoder, **(encoder_overrides or {}))
    mae_kwargs = {
        "mask_ratio": mask_ratio,
        "decoder_dim": decoder_dim,
        "decoder_depth": decoder_depth,
        "decoder_heads": decoder_heads,
        "norm_pix_loss": norm_pix_loss,
    }
    model = MaskedAutoencoder(create_encoder(encoder, **arch_kwargs), **mae_kwargs).to(device)
    size = _input_size(model.encoder)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95))

    n_steps = steps_per_epoch(len(images), batch_size)
    total, warmup = epochs * n_steps, int(warmup_epochs * n_steps)
    history = []
    step = 0
    for epoch in range(epochs):
        model.train()
        start, loss_sum, seen = time.perf_counter(), 0.0, 0
        for idx in batches(len(images), batch_size, rng, desc=f"mae epoch {epoch}"):
            lr_now = get_lr(step, total, warmup, lr, min_lr)
            set_lr(optimizer, lr_now)
            x = to_tensor_batch(images[idx], device, size=size)
            with autocast(device):
                loss, _, _ = model(x)
            loss_sum += optimizer_step(loss, optimizer, model, clip_grad) * len(idx)
            seen += len(idx)
            step += 1
        seconds = time.perf_counter() - start
        history.append(
            {
                "epoch": epoch,
                "loss": loss_sum / seen,
                "lr": lr_now,
                "seconds": seconds,
                "images_per_s": seen / seconds,
            }
        )

    checkpoint = {
        "model": state_on_cpu(model.encoder),
        "encoder": encoder,
        "encoder_kwargs": arch_kwargs,
        "feature_dim": feature_dim(model.encoder),
        "config": config,
        "mae": {
            "kwargs": mae_kwargs,
            "state": {k: v for k, v in state_on_cpu(model).items() if not k.startswith("encoder.")},
        },
    }
    return checkpoint, history


def load_mae(checkpoint: dict[str, Any], device: str | torch.device = "cpu") -> MaskedAutoencoder:
    """Rebuild the full MAE (encoder + decoder) from a `pretrain_mae` checkpoint, in eval mode."""
    if "mae" not in checkpoint:
        raise KeyError("checkpoint has no MAE decoder ('mae' key): it is not a pretrain_mae checkpoint")
    encoder = create_encoder(checkpoint["encoder"], **checkpoint.get("encoder_kwargs", {}))
    model = MaskedAutoencoder(encoder, **checkpoint["mae"]["kwargs"])
    state = {f"encoder.{k}": v for k, v in checkpoint["model"].items()} | checkpoint["mae"]["state"]
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


@torch.no_grad()
def reconstruction_preview(
    checkpoint: dict[str, Any],
    images: np.ndarray,
    *,
    mask_ratio: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> np.ndarray:
    """An image grid showing what the MAE learnt: one row per image, original | masked | reconstruction.

    The reconstruction pastes the predicted masked patches into the visible ones. Masking noise comes
    from `seed` (global RNG untouched).

    Args:
        checkpoint: from `pretrain_mae`.
        images: uint8 [n, H, W, 3] (a handful).
        mask_ratio: defaults to the pretraining ratio.

    Returns:
        uint8 [n * S, 3 * S, 3] RGB, S the encoder's input size (save it as a PNG).
    """
    model = load_mae(checkpoint, device)
    x = to_tensor_batch(images, device, size=_input_size(model.encoder))
    noise = torch.rand(len(images), model.num_patches, generator=torch.Generator().manual_seed(seed))
    _, pred, mask = model(x, mask_ratio=mask_ratio, noise=noise.to(device))
    masked, pasted = model.reconstruct(x, pred, mask)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    panels = [(p * std + mean).clamp(0, 1) for p in (x, masked, pasted)]  # each [n, 3, S, S]
    grid = torch.cat(panels, dim=3)  # side by side: [n, 3, S, 3S]
    grid = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[3], 3)  # rows stacked: [n*S, 3S, 3]
    return (grid * 255).round().to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------------------------------------
# Fine-tuning


class FinetuneModel(nn.Module):
    """Encoder + one linear head per task on the pooled feature."""

    def __init__(self, encoder: nn.Module, tasks: Sequence[Task]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = TaskHeads(feature_dim(encoder), tasks, hidden=0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [N, 3, H, W] -> {task: [N, num_outputs]} (tanh on regression)."""
        return self.heads(self.encoder(x))


@torch.no_grad()
def _predict_images(
    model: FinetuneModel, images: np.ndarray, batch_size: int, device: str
) -> dict[str, np.ndarray]:
    """task -> [N, C] probabilities / values of a fine-tune model (eval mode, no augmentation)."""
    model.eval()
    size = _input_size(model.encoder)
    outputs: dict[str, list[torch.Tensor]] = {task.name: [] for task in model.heads.tasks}
    for start in range(0, len(images), batch_size):
        x = to_tensor_batch(images[start : start + batch_size], device, size=size)
        with autocast(device):
            out = model(x)
        for task in model.heads.tasks:
            outputs[task.name].append(task_probabilities(task, out[task.name]).cpu())
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}


def finetune_encoder(
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    *,
    tasks: list[str],
    init: dict[str, Any] | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: float,
    drop_path: float,
    seed: int,
    device: str,
    layer_decay: float = 1.0,
    val_images: np.ndarray | None = None,
    val_targets: dict[str, np.ndarray] | None = None,
    encoder: str | None = None,
    encoder_overrides: dict[str, Any] | None = None,
    min_lr: float = 0.0,
    clip_grad: float | None = 1.0,
    class_balance: bool = False,
    augment: bool = True,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fine-tune an encoder with one linear head per task on frame labels.

    Args:
        images: uint8 [N, H, W, 3].
        targets: task -> expr [N] int, au [N, 12] int, va [N, 2] float, with the tasks' invalid markers.
        tasks: task names to train (each needs a targets entry).
        init: a checkpoint with encoder weights (from `pretrain_mae` or ours); None trains from scratch
            (ablation "without MAE pretraining"; then `encoder` names the architecture).
        encoder_overrides: architecture kwargs replacing the init's / registry's (e.g. `img_size`).
        epochs, batch_size, lr, weight_decay, warmup_epochs: as usual (lr is the peak of the schedule).
        drop_path: stochastic depth rate of the encoder (0.1 in seed 001).
        seed: seeds init of the heads, drop path, batch order and augmentation.
        device: "cpu" or "cuda[:i]".
        layer_decay: layer-wise lr decay (0.65 in seed 001; 1.0 = off).
        val_images, val_targets: optional held-out frames scored after every epoch.
        min_lr: floor of the cosine schedule; clip_grad: max gradient norm (None = off).
        class_balance: weight EXPR classes / AU positives by inverse frequency (seed 004).
        augment: flip / zoom / shift / brightness-contrast augmentation.

    Returns:
        checkpoint (encoder weights + heads), history (per epoch: loss, loss_<task>, lr, seconds,
        images_per_s, and val_<task>_f1 / val_<task>_ccc when validation data is given).
    """
    task_list = [get_task(name) for name in tasks]
    missing = [name for name in tasks if name not in targets]
    if missing:
        raise KeyError(f"no targets for tasks {missing}")
    if init is None and encoder is None:
        raise ValueError("give an init checkpoint or an encoder name to train from scratch")
    config = {
        "tasks": list(tasks),
        "init_encoder": None if init is None else init["encoder"],
        "from_scratch": init is None,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "layer_decay": layer_decay,
        "warmup_epochs": warmup_epochs,
        "drop_path": drop_path,
        "seed": seed,
        "min_lr": min_lr,
        "clip_grad": clip_grad,
        "class_balance": class_balance,
        "augment": augment,
    }
    rng = seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)

    # Frames without a label for any selected task cannot teach anything: leave them out.
    labelled = np.zeros(len(images), dtype=bool)
    for task in task_list:
        labelled |= task.valid_mask(targets[task.name])
    keep = np.flatnonzero(labelled)
    if len(keep) == 0:
        raise ValueError(f"no frame is labelled for any of the tasks {list(tasks)}")
    config["num_images"] = int(len(keep))

    if init is None:
        name, arch_kwargs = encoder, encoder_kwargs(encoder)
    else:
        name, arch_kwargs = init["encoder"], dict(init.get("encoder_kwargs", {}))
    arch_kwargs |= encoder_overrides or {}
    vit = create_encoder(name, **arch_kwargs, drop_path_rate=drop_path)
    if init is not None:
        load_encoder_checkpoint(vit, init)  # resamples pos_embed if an override changed img_size
    model = FinetuneModel(vit, task_list).to(device)
    size = _input_size(vit)
    num_layers = len(vit.blocks)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay, layer_decay, num_layers), lr=lr)

    all_targets = {t.name: torch.as_tensor(np.asarray(targets[t.name])) for t in task_list}
    weights = {}
    if class_balance:
        for task in task_list:
            w = balanced_weights(task, targets[task.name])
            if w is not None:
                weights[task.name] = torch.as_tensor(w, device=device)

    n_steps = steps_per_epoch(len(keep), batch_size)
    total, warmup = epochs * n_steps, int(warmup_epochs * n_steps)
    history = []
    step = 0
    for epoch in range(epochs):
        model.train()
        start, seen = time.perf_counter(), 0
        sums = {"loss": 0.0} | {f"loss_{t.name}": 0.0 for t in task_list}
        for batch in batches(len(keep), batch_size, rng, desc=f"finetune epoch {epoch}"):
            idx = keep[batch]
            lr_now = get_lr(step, total, warmup, lr, min_lr)
            set_lr(optimizer, lr_now)
            x = to_tensor_batch(images[idx], device, size=size, augment=augment, generator=generator)
            y = {k: v[idx].to(device) for k, v in all_targets.items()}
            with autocast(device):
                outputs = model(x)
            loss, parts = multitask_loss(task_list, outputs, y, weights)
            sums["loss"] += optimizer_step(loss, optimizer, model, clip_grad) * len(idx)
            for task_name, value in parts.items():
                sums[f"loss_{task_name}"] += value * len(idx)
            seen += len(idx)
            step += 1
        seconds = time.perf_counter() - start
        record = {"epoch": epoch} | {k: v / seen for k, v in sums.items()}
        record |= {"lr": lr_now, "seconds": seconds, "images_per_s": seen / seconds}
        if val_images is not None and val_targets is not None:
            preds = _predict_images(model, val_images, batch_size, device)
            scores = evaluate_predictions(task_list, preds, val_targets)
            record |= {f"val_{k}": v for k, v in scores.items()}
        history.append(record)

    checkpoint = {
        "model": state_on_cpu(model.encoder),
        "encoder": name,
        "encoder_kwargs": arch_kwargs,
        "feature_dim": feature_dim(model.encoder),
        "config": config,
        "tasks": list(tasks),
        "heads": state_on_cpu(model.heads),
    }
    return checkpoint, history


# ----------------------------------------------------------------------------------------------------------
# Feature extraction


@torch.inference_mode()
def extract_features(
    images: np.ndarray, checkpoint: dict[str, Any], *, batch_size: int, device: str
) -> np.ndarray:
    """Pooled encoder features of every image (eval mode, no masking, no augmentation).

    Args:
        images: uint8 [N, H, W, 3].
        checkpoint: any checkpoint of ours with encoder weights (pretrain or fine-tune).

    Returns:
        float32 [N, D].
    """
    encoder = encoder_from_checkpoint(checkpoint).to(device).eval()
    size = _input_size(encoder)
    parts = [torch.zeros(0, feature_dim(encoder))]
    for start in tqdm(range(0, len(images), batch_size), desc="features", disable=None):
        x = to_tensor_batch(images[start : start + batch_size], device, size=size)
        with autocast(device):
            parts.append(encoder(x).float().cpu())
    return torch.cat(parts).numpy()


# ----------------------------------------------------------------------------------------------------------
# Temporal training


def _complete_targets(
    seq_targets: dict[str, np.ndarray], n_frames: int, tasks: Sequence[Task]
) -> dict[str, np.ndarray]:
    """Targets of one sequence for every task; a task the sequence has no labels for is all invalid."""
    full = {}
    for task in tasks:
        if task.name in seq_targets:
            full[task.name] = np.asarray(seq_targets[task.name])
        else:
            multiclass = task.kind == "multiclass"
            shape = (n_frames,) if multiclass else (n_frames, task.num_outputs)
            full[task.name] = np.full(shape, task.invalid, dtype=np.int64 if multiclass else np.float32)
    return full


def _collate_windows(
    items: Sequence[tuple[int, int, int]],
    features: Sequence[torch.Tensor],
    targets: Sequence[dict[str, torch.Tensor]],
    tasks: Sequence[Task],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Stack windows (sequence, start, end) into padded tensors.

    Returns:
        x [B, T, D] (zeros on padding), pad_mask [B, T] (True = padding), targets task -> [B, T(, C)] with
        padding set to the task's invalid marker so the losses skip it.
    """
    length = max(end - start for _, start, end in items)
    dim = features[0].shape[1]
    x = torch.zeros(len(items), length, dim)
    pad_mask = torch.ones(len(items), length, dtype=torch.bool)
    y = {}
    for task in tasks:
        shape = (len(items), length) if task.kind == "multiclass" else (len(items), length, task.num_outputs)
        dtype = torch.long if task.kind == "multiclass" else torch.float32
        y[task.name] = torch.full(shape, task.invalid, dtype=dtype)
    for row, (seq, start, end) in enumerate(items):
        x[row, : end - start] = features[seq][start:end]
        pad_mask[row, : end - start] = False
        for task in tasks:
            y[task.name][row, : end - start] = targets[seq][task.name][start:end]
    return x, pad_mask, y


def train_temporal(
    train_seqs: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    *,
    tasks: list[str],
    model: str,
    model_kwargs: dict[str, Any],
    window: int,
    stride: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: float,
    seed: int,
    device: str,
    feature_noise: float = 0.0,
    val_seqs: list[tuple[np.ndarray, dict[str, np.ndarray]]] | None = None,
    min_lr: float = 0.0,
    clip_grad: float | None = 1.0,
    class_balance: bool = False,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train a temporal model on windows of per-frame features.

    Args:
        train_seqs: one (features [T, D], targets task -> [T] or [T, C]) per video track; a task missing from
            a sequence's targets counts as unlabelled there.
        tasks: task names to train.
        model: registry name (`pipeline.models.sequence.TEMPORAL_MODELS`); model_kwargs: its kwargs.
        window, stride: window length and step (300 / 200 in seed 003).
        epochs, batch_size (windows per step), lr, weight_decay, warmup_epochs: as usual.
        seed: seeds init, dropout, feature noise and window order.
        device: "cpu" or "cuda[:i]".
        feature_noise: std of Gaussian noise added to the features during training, in units of each
            feature's training std (augmentation; 0 = off).
        val_seqs: optional held-out sequences scored after every epoch with `predict_sequence`.
        min_lr: floor of the cosine schedule; clip_grad: max gradient norm.
        class_balance: weight EXPR classes / AU positives by inverse frequency.

    Returns:
        checkpoint (feature standardisation inside "model"), history (per epoch: loss, loss_<task>, lr,
        seconds, windows_per_s, and val scores when val_seqs is given).
    """
    task_list = [get_task(name) for name in tasks]
    if not train_seqs:
        raise ValueError("train_temporal needs at least one training sequence")
    rng = seed_everything(seed)
    features = [torch.as_tensor(np.asarray(feats, dtype=np.float32)) for feats, _ in train_seqs]
    in_dim = features[0].shape[1]
    targets = [
        {k: torch.as_tensor(v) for k, v in _complete_targets(seq_targets, len(feats), task_list).items()}
        for feats, (_, seq_targets) in zip(features, train_seqs, strict=True)
    ]

    # Windows without any label teach nothing: skip them.
    items = []
    for seq, feats in enumerate(features):
        labelled = np.zeros(len(feats), dtype=bool)
        for task in task_list:
            labelled |= task.valid_mask(targets[seq][task.name].numpy())
        items += [(seq, s, e) for s, e in windows(len(feats), window, stride) if labelled[s:e].any()]
    if not items:
        raise ValueError("no labelled window in the training sequences")

    all_features = torch.cat(features)
    net = create_temporal_model(model, in_dim, task_list, **model_kwargs)
    net.set_normalization(all_features.mean(dim=0), all_features.std(dim=0))
    net.to(device)
    optimizer = torch.optim.AdamW(param_groups(net, weight_decay), lr=lr)
    weights = {}
    if class_balance:
        for task in task_list:
            w = balanced_weights(task, torch.cat([t[task.name] for t in targets]).numpy())
            if w is not None:
                weights[task.name] = torch.as_tensor(w, device=device)

    config = {
        "tasks": list(tasks),
        "model": model,
        "model_kwargs": dict(model_kwargs),
        "window": window,
        "stride": stride,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "seed": seed,
        "feature_noise": feature_noise,
        "min_lr": min_lr,
        "clip_grad": clip_grad,
        "class_balance": class_balance,
        "num_sequences": len(features),
        "num_windows": len(items),
    }
    if val_seqs:
        val_full = [_complete_targets(targets, len(feats), task_list) for feats, targets in val_seqs]
        val_targets = {t.name: np.concatenate([v[t.name] for v in val_full]) for t in task_list}

    n_steps = steps_per_epoch(len(items), batch_size)
    total, warmup = epochs * n_steps, int(warmup_epochs * n_steps)
    history = []
    step = 0
    for epoch in range(epochs):
        net.train()
        start, seen = time.perf_counter(), 0
        sums = {"loss": 0.0} | {f"loss_{t.name}": 0.0 for t in task_list}
        for batch in batches(len(items), batch_size, rng, desc=f"temporal epoch {epoch}"):
            lr_now = get_lr(step, total, warmup, lr, min_lr)
            set_lr(optimizer, lr_now)
            x, pad_mask, y = _collate_windows([items[i] for i in batch], features, targets, task_list)
            x, pad_mask = x.to(device), pad_mask.to(device)
            y = {k: v.to(device) for k, v in y.items()}
            if feature_noise:
                x = x + feature_noise * net.feature_std * torch.randn(x.shape, device=device)
            with autocast(device):
                outputs = net(x, pad_mask)
            loss, parts = multitask_loss(task_list, outputs, y, weights)
            sums["loss"] += optimizer_step(loss, optimizer, net, clip_grad) * len(batch)
            for task_name, value in parts.items():
                sums[f"loss_{task_name}"] += value * len(batch)
            seen += len(batch)
            step += 1
        seconds = time.perf_counter() - start
        record = {"epoch": epoch} | {k: v / seen for k, v in sums.items()}
        record |= {"lr": lr_now, "seconds": seconds, "windows_per_s": seen / seconds}
        if val_seqs:
            preds = [predict_sequence(net, feats, window, stride, device) for feats, _ in val_seqs]
            preds = {t.name: np.concatenate([p[t.name] for p in preds]) for t in task_list}
            scores = evaluate_predictions(task_list, preds, val_targets)
            record |= {f"val_{k}": v for k, v in scores.items()}
        history.append(record)

    checkpoint = {
        "model": state_on_cpu(net),
        "temporal": model,
        "temporal_kwargs": {"in_dim": int(in_dim), "tasks": list(tasks), **model_kwargs},
        "config": config,
    }
    return checkpoint, history


def load_temporal(checkpoint: dict[str, Any], device: str | torch.device = "cpu") -> TemporalModel:
    """Rebuild a temporal model (with its feature standardisation) from a `train_temporal` checkpoint."""
    kwargs = dict(checkpoint["temporal_kwargs"])
    in_dim = kwargs.pop("in_dim")
    tasks = [get_task(name) for name in kwargs.pop("tasks")]
    net = create_temporal_model(checkpoint["temporal"], in_dim, tasks, **kwargs)
    net.load_state_dict(checkpoint["model"], strict=True)
    return net.to(device).eval()
