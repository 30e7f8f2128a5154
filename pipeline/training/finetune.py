"""Recipe: fine-tune a pretrained encoder with one linear head per task on frame labels.

Checkpoint: `{"model": encoder state, "encoder", "encoder_kwargs", "feature_dim", "config", "tasks",
"heads"}`; feature extraction reads the encoder part only.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import FinetuneConfig
from pipeline.inference.images import to_tensor_batch
from pipeline.models.encoders import (
    create_encoder,
    encoder_kwargs,
    feature_dim,
    input_size,
    load_encoder_checkpoint,
)
from pipeline.models.heads import TaskHeads
from pipeline.models.split_vit import freeze_lower, lower_tokens, upper_features
from pipeline.runtime import autocast
from pipeline.tasks.definitions import Task, get_tasks
from pipeline.tasks.kinds import behaviour
from pipeline.tasks.scores import monitor_scores
from pipeline.training.augment import augment_batch
from pipeline.training.loop import FitConfig, fit, state_on_cpu
from pipeline.training.losses import balanced_weights, multitask_loss


class FinetuneModel(nn.Module):
    """Encoder + one linear head per task on the pooled feature."""

    def __init__(self, encoder: nn.Module, tasks: list[Task]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = TaskHeads(feature_dim(encoder), tasks, hidden=0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [N, 3, H, W] -> {task: [N, num_outputs]} (tanh on regression)."""
        return self.heads(self.encoder(x))

    def forward_tokens(self, tokens: torch.Tensor, frozen_blocks: int) -> dict[str, torch.Tensor]:
        """Cached lower-block tokens [N, L, D] -> {task: [N, num_outputs]}."""
        return self.heads(upper_features(self.encoder, tokens, frozen_blocks))


@torch.no_grad()
def cache_lower_tokens(
    encoder: nn.Module, images: np.ndarray, frozen_blocks: int, device: str, batch_size: int = 128
) -> torch.Tensor:
    """Tokens after the frozen blocks for every image and its mirror image: [2, N, L, D] float32 on the
    device (index 0: as is, 1: flipped), computed once so that every epoch runs the upper blocks only."""
    was_training = encoder.training
    encoder.eval()
    size = input_size(encoder)
    parts: list[list[torch.Tensor]] = [[], []]
    for start in range(0, len(images), batch_size):
        x = to_tensor_batch(images[start : start + batch_size], device, size=size)
        with autocast(device):
            parts[0].append(lower_tokens(encoder, x, frozen_blocks).float())
            parts[1].append(lower_tokens(encoder, x.flip(-1), frozen_blocks).float())
    encoder.train(was_training)
    return torch.stack([torch.cat(p) for p in parts])


@torch.no_grad()
def predict_images(
    model: FinetuneModel, images: np.ndarray, batch_size: int, device: str
) -> dict[str, np.ndarray]:
    """task -> [N, C] probabilities / values of a fine-tune model (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    size = input_size(model.encoder)
    outputs: dict[str, list[torch.Tensor]] = {task.name: [] for task in model.heads.tasks}
    for start in range(0, len(images), batch_size):
        x = to_tensor_batch(images[start : start + batch_size], device, size=size)
        with autocast(device):
            out = model(x)
        for task in model.heads.tasks:
            outputs[task.name].append(behaviour(task).activation(out[task.name]).cpu())
    model.train(was_training)
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}


def finetune_encoder(
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    config: FinetuneConfig,
    *,
    init: dict[str, Any] | None,
    device: str = "cpu",
    encoder: str | None = None,
    encoder_overrides: dict[str, Any] | None = None,
    val_images: np.ndarray | None = None,
    val_targets: dict[str, np.ndarray] | None = None,
    augment: bool = True,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fine-tune an encoder with one linear head per task.

    Args:
        images: uint8 [N, H, W, 3].
        targets: task -> [N] or [N, C] with the tasks' invalid markers (every task of `config.tasks`).
        config: the `finetune` params (tasks, schedule, layer decay, drop path, EMA, class balance, seed).
        init: a checkpoint with encoder weights (from `pretrain_mae`, ours or an imported MAE); None trains
            from scratch (ablation "without MAE pretraining"; then `encoder` names the architecture).
        encoder_overrides: architecture kwargs replacing the init's / registry's (e.g. `img_size`).
        val_images, val_targets: held-out frames scored after every epoch (watching only: nothing is
            chosen on them).
        augment: flip / zoom / shift / brightness-contrast augmentation; with `config.frozen_blocks` > 0
            the frozen blocks' tokens are computed once per image (and its mirror image), so augmentation
            is the horizontal flip only.

    Returns:
        checkpoint (encoder weights + heads), history (per epoch: loss, loss_<task>, lr, val scores).
    """
    tasks = get_tasks(config.tasks)
    missing = [t.name for t in tasks if t.name not in targets]
    if missing:
        raise KeyError(f"no targets for tasks {missing}")
    if init is None and encoder is None:
        raise ValueError("give an init checkpoint or an encoder name to train from scratch")

    # Frames without a label for any selected task cannot teach anything: leave them out.
    labelled = np.zeros(len(images), dtype=bool)
    for task in tasks:
        labelled |= task.valid_mask(targets[task.name])
    keep = np.flatnonzero(labelled)
    if len(keep) == 0:
        raise ValueError(f"no frame is labelled for any of the tasks {list(config.tasks)}")

    torch.manual_seed(config.seed)  # head init
    if init is None:
        name, arch_kwargs = encoder, encoder_kwargs(encoder)
    else:
        name, arch_kwargs = init["encoder"], dict(init.get("encoder_kwargs", {}))
    arch_kwargs |= encoder_overrides or {}
    vit = create_encoder(name, **arch_kwargs, drop_path_rate=config.drop_path)
    if init is not None:
        load_encoder_checkpoint(vit, init)  # resamples pos_embed if an override changed img_size
    model = FinetuneModel(vit, tasks).to(device)
    size = input_size(vit)
    frozen = config.frozen_blocks
    if frozen:
        freeze_lower(vit, frozen)
        tokens = cache_lower_tokens(vit, images[keep], frozen, device)  # [2, len(keep), L, D]

    all_targets = {t.name: torch.as_tensor(np.asarray(targets[t.name])) for t in tasks}
    weights = {}
    if config.class_balance:
        for task in tasks:
            w = balanced_weights(task, targets[task.name])
            if w is not None:
                weights[task.name] = torch.as_tensor(w, device=device)
    generator = torch.Generator().manual_seed(config.seed)

    def step(batch: np.ndarray):
        idx = keep[batch]
        y = {k: v[idx].to(device) for k, v in all_targets.items()}
        if frozen:
            draw = torch.rand(len(batch), generator=generator)  # drawn either way: same RNG stream
            flip = draw < 0.5 if augment else torch.zeros(len(batch), dtype=torch.bool)
            rows = torch.as_tensor(batch)
            x = torch.where(flip.to(device)[:, None, None], tokens[1, rows], tokens[0, rows])
            return multitask_loss(tasks, model.forward_tokens(x, frozen), y, weights)
        augmenter = (lambda x: augment_batch(x, generator)) if augment else None
        x = to_tensor_batch(images[idx], device, size=size, augment=augmenter)
        return multitask_loss(tasks, model(x), y, weights)

    def validate(current: nn.Module) -> dict[str, float]:
        if val_images is None or val_targets is None or len(val_images) == 0:
            return {}
        preds = predict_images(current, val_images, config.batch_size, device)
        return {f"val_{k}": v for k, v in monitor_scores(tasks, preds, val_targets).items()}

    fit_config = FitConfig.from_params(config)
    model, history = fit(
        model,
        step,
        len(keep),
        fit_config,
        device=device,
        num_layers=len(vit.blocks),
        on_epoch_end=validate,
        desc="finetune",
    )
    checkpoint = {
        "model": state_on_cpu(model.encoder),
        "encoder": name,
        "encoder_kwargs": arch_kwargs,
        "feature_dim": feature_dim(model.encoder),
        "config": asdict(config)
        | {"num_images": int(len(keep)), "init_encoder": None if init is None else name},
        "tasks": list(config.tasks),
        "heads": state_on_cpu(model.heads),
    }
    return checkpoint, history
