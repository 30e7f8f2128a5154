"""Fine-tuning a pretrained encoder on frame labels, by recipe: plain (linear heads, the MAE reference's),
masked CoTEX and EMMA (seed 001), the AU -> basic-emotion chain (seed 002); models in
`pipeline.models.finetune`, one engine (`finetune_encoder`) for all of them.

Checkpoint: `{"model": encoder state, "encoder", "encoder_kwargs", "feature_dim", "config", "recipe",
"tasks", "heads"}` ("heads": every other weight of the recipe's model); feature extraction reads the
encoder part only, `load_recipe_model` rebuilds the whole model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import FINETUNE_RECIPES, FinetuneConfig
from pipeline.inference.images import to_tensor_batch
from pipeline.models.encoders import (
    create_encoder,
    encoder_kwargs,
    feature_dim,
    input_size,
    load_encoder_checkpoint,
)
from pipeline.models.finetune import CotexModel, EmmaModel, FinetuneModel
from pipeline.models.split_vit import freeze_lower, lower_tokens
from pipeline.runtime import autocast
from pipeline.tasks.definitions import Task, get_tasks
from pipeline.tasks.kinds import behaviour
from pipeline.tasks.scores import monitor_scores
from pipeline.training.augment import finetune_augment
from pipeline.training.loop import FitConfig, fit, state_on_cpu
from pipeline.training.losses import balanced_weights
from pipeline.training.mixing import mix_batch, mixed_loss


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
    model: nn.Module,
    images: np.ndarray,
    batch_size: int,
    device: str,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """task -> [N, C] probabilities / values of a recipe model (eval mode, no augmentation).

    Args:
        images: uint8 [N, H, W, 3]; extra: per-image inputs the model needs (EMMA: "fer" [N, 7]).
    """
    was_training = model.training
    model.eval()
    size = input_size(model.encoder)
    outputs: dict[str, list[torch.Tensor]] = {task.name: [] for task in model.tasks}
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        x = to_tensor_batch(images[rows], device, size=size)
        kwargs = {k: torch.as_tensor(v[rows], device=device) for k, v in (extra or {}).items()}
        with autocast(device):
            out = model(x, **kwargs)
        for task in model.tasks:
            outputs[task.name].append(behaviour(task).activation(out[task.name].float()).cpu())
    model.train(was_training)
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}


def build_model(recipe: str, vit: nn.Module, tasks: list[Task], config: FinetuneConfig) -> nn.Module:
    """The model a recipe trains around an encoder (see `pipeline.models.finetune`)."""
    frozen = config.frozen_blocks
    if recipe in ("plain", "chain"):
        return FinetuneModel(vit, tasks, frozen)
    if recipe == "cotex":
        generator = torch.Generator().manual_seed(config.seed + 1)  # the two ViTs' masks
        return CotexModel(
            vit,
            tasks,
            frozen_blocks=frozen,
            mask_ratio=config.cotex_mask_ratio,
            weight=config.cotex_weight,
            generator=generator,
        )
    if recipe == "emma":
        return EmmaModel(vit, tasks, frozen_blocks=frozen)
    raise KeyError(f"unknown fine-tuning recipe '{recipe}' (known: {', '.join(RECIPES)})")


# Recipes by name (params `finetune.recipe`); "chain" runs `finetune_encoder` twice (see `run_recipe`).
RECIPES = FINETUNE_RECIPES
# Seed 002's second step: the six basic emotions as a multi-label task (weighted BCE).
CHAIN_TASK = "basic"


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
    extra: dict[str, np.ndarray] | None = None,
    val_extra: dict[str, np.ndarray] | None = None,
    recipe: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fine-tune an encoder with task heads, by one recipe (`config.recipe` unless `recipe` is given).

    Args:
        images: uint8 [N, H, W, 3].
        targets: task -> [N] or [N, C] with the tasks' invalid markers (every task of `config.tasks`).
        config: the `finetune` params (recipe, tasks, schedule, layer decay, drop path, EMA, class balance,
            augmentation, mixing, CoTEX knobs, seed).
        init: a checkpoint with encoder weights (from `pretrain_mae`, ours or an imported MAE); None trains
            from scratch (ablation "without MAE pretraining"; then `encoder` names the architecture).
        encoder_overrides: architecture kwargs replacing the init's / registry's (e.g. `img_size`).
        val_images, val_targets: held-out frames scored after every epoch (watching only: nothing is
            chosen on them).
        augment: image augmentation (`finetune_augment` with the config's crop margin and colour jitter,
            then mixup / cutmix); with `config.frozen_blocks` > 0 the frozen blocks' tokens are computed
            once per image (and its mirror image), so augmentation is the horizontal flip only.
        extra, val_extra: per-image inputs a recipe needs, aligned with the images (EMMA: "fer" [N, 7]).
        recipe: "plain", "cotex" or "emma" (the chain calls this twice, see `run_recipe`).

    Returns:
        checkpoint (encoder weights + the recipe's other weights under "heads"), history (per epoch:
        loss, loss_<part>, lr, val scores).
    """
    recipe = recipe or config.recipe
    tasks = get_tasks(config.tasks)
    missing = [t.name for t in tasks if t.name not in targets]
    if missing:
        raise KeyError(f"no targets for tasks {missing}")
    if init is None and encoder is None:
        raise ValueError("give an init checkpoint or an encoder name to train from scratch")
    extra = extra or {}

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
    frozen = config.frozen_blocks
    if frozen:
        freeze_lower(vit, frozen)  # before the model copies the encoder (CoTEX's second ViT)
    model = build_model(recipe, vit, tasks, config).to(device)
    size = input_size(vit)
    if frozen:
        tokens = cache_lower_tokens(vit, images[keep], frozen, device)  # [2, len(keep), L, D]

    all_targets = {t.name: torch.as_tensor(np.asarray(targets[t.name])) for t in tasks}
    all_extra = {k: torch.as_tensor(np.asarray(v)) for k, v in extra.items()}
    weights = {}
    if config.class_balance:
        for task in tasks:
            w = balanced_weights(task, targets[task.name])
            if w is not None:
                weights[task.name] = torch.as_tensor(w, device=device)
    generator = torch.Generator().manual_seed(config.seed)
    mixing = augment and (config.mixup_alpha > 0 or config.cutmix_alpha > 0)

    def augmenter(x: torch.Tensor) -> torch.Tensor:
        return finetune_augment(
            x, generator, crop_margin=config.crop_margin, colour_jitter=config.colour_jitter
        )

    def loss_of(outputs, y: dict[str, torch.Tensor]):
        return model.training_loss(outputs, y, weights)

    def step(batch: np.ndarray):
        idx = keep[batch]
        y = {k: v[idx].to(device) for k, v in all_targets.items()}
        more = {k: v[idx].to(device) for k, v in all_extra.items()}
        if frozen:
            draw = torch.rand(len(batch), generator=generator)  # drawn either way: same RNG stream
            flip = draw < 0.5 if augment else torch.zeros(len(batch), dtype=torch.bool)
            rows = torch.as_tensor(batch)
            x = torch.where(flip.to(device)[:, None, None], tokens[1, rows], tokens[0, rows])
            return loss_of(model.training_outputs(x, tokens=True, **more), y)
        x = to_tensor_batch(images[idx], device, size=size, augment=augmenter if augment else None)
        if not mixing:
            return loss_of(model.training_outputs(x, **more), y)
        x, perm, lam = mix_batch(x, generator, config.mixup_alpha, config.cutmix_alpha)
        perm_device = perm.to(device)
        more = {k: lam * v + (1 - lam) * v[perm_device] for k, v in more.items()}  # scores mix like pixels
        return mixed_loss(loss_of, model.training_outputs(x, **more), y, perm_device, lam)

    def validate(current: nn.Module) -> dict[str, float]:
        if val_images is None or val_targets is None or len(val_images) == 0:
            return {}
        preds = predict_images(current, val_images, config.batch_size, device, val_extra)
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
        desc=f"finetune {recipe}",
    )
    checkpoint = {
        "model": state_on_cpu(model.encoder),
        "encoder": name,
        "encoder_kwargs": arch_kwargs,
        "feature_dim": feature_dim(model.encoder),
        "config": asdict(config)
        | {"num_images": int(len(keep)), "init_encoder": None if init is None else name},
        "recipe": recipe,
        "tasks": [t.name for t in tasks],
        "heads": {k: v for k, v in state_on_cpu(model).items() if not k.startswith(model.encoder_prefix)},
    }
    return checkpoint, history


def run_recipe(
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    config: FinetuneConfig,
    *,
    init: dict[str, Any] | None,
    **kwargs: Any,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fine-tune by `config.recipe`; the chain (seed 002) is two `finetune_encoder` runs: first on
    `config.tasks` (seed 002: AUs), then, from that encoder, on the six basic emotions as multi-label.

    Args: as `finetune_encoder`; for the chain, `targets` (and val targets) must include "basic".

    Returns:
        The final checkpoint and the history of every phase (records carry a "phase" entry).
    """
    if config.recipe != "chain":
        return finetune_encoder(images, targets, config, init=init, **kwargs)
    first, history = finetune_encoder(images, targets, config, init=init, recipe="plain", **kwargs)
    second_config = dataclasses.replace(config, tasks=(CHAIN_TASK,))
    final, second_history = finetune_encoder(
        images, targets, second_config, init=first, recipe="plain", **kwargs
    )
    final["recipe"] = "chain"
    final["config"]["chain_first_tasks"] = list(config.tasks)
    history = [r | {"phase": 0} for r in history] + [r | {"phase": 1} for r in second_history]
    return final, history


def load_recipe_model(checkpoint: dict[str, Any], device: str = "cpu") -> nn.Module:
    """Rebuild a fine-tuned recipe model (encoder + heads) from its checkpoint, in eval mode."""
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    values = {
        k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["config"].items() if k in known
    }
    config = dataclasses.replace(FinetuneConfig(**values), tasks=tuple(checkpoint["tasks"]), frozen_blocks=0)
    vit = create_encoder(checkpoint["encoder"], **checkpoint["encoder_kwargs"])
    recipe = "plain" if checkpoint["recipe"] == "chain" else checkpoint["recipe"]
    model = build_model(recipe, vit, get_tasks(config.tasks), config)
    prefix = model.encoder_prefix
    state = checkpoint["heads"] | {prefix + k: v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
