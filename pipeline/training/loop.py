"""The one training loop: `fit` runs every recipe (MAE pretraining, encoder fine-tuning, sequence models).

Read top to bottom (nanoGPT / MAE-reference style): per-step linear warm-up + half-cosine learning rate,
AdamW without weight decay on biases, norms and tokens, optional layer-wise lr decay, gradient
accumulation, clipping, a guard against non-finite losses, bf16 autocast on CUDA only, an optional EMA of
the weights, and a resumable checkpoint after every epoch. A recipe supplies the model and a `step`
function that turns a batch of sample indices into a loss; `fit` owns everything else.

Determinism: `fit` seeds torch's global RNG (dropout, drop path, masks, noise) and draws the batch order
from a numpy Generator, both from `FitConfig.seed`; with a fixed thread count (pipeline.runtime) two runs
with the same arguments give identical weights. History records hold no wall-clock values (later stages
read them; DVC would see every rerun as a change): speed is printed by the progress bar instead.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.runtime import autocast, channels_last
from pipeline.training import distributed

StepResult = tuple[torch.Tensor, dict[str, float]]  # loss, named parts for logging


@dataclass(frozen=True)
class FitConfig:
    """Optimisation knobs shared by every recipe (each recipe builds one from its params section)."""

    epochs: int
    batch_size: int
    lr: float  # peak of the schedule
    weight_decay: float
    warmup_epochs: float
    seed: int
    min_lr: float = 0.0
    layer_decay: float = 1.0  # < 1: ViT block d gets lr * layer_decay ** (depth + 1 - d)
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    accumulation: int = 1  # optimizer step every n batches
    ema_decay: float = 0.0  # 0 = off
    betas: tuple[float, float] = (0.9, 0.999)
    drop_last: bool = True  # drop the last partial batch unless it is the only one

    @classmethod
    def from_params(cls, params: Any, **overrides: Any) -> FitConfig:
        """The knobs a recipe's params section (a config dataclass) shares with `FitConfig`, by name."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in asdict(params).items() if k in names} | overrides)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch's global RNG and return a numpy Generator for batch order."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


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


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    return max(1, n // batch_size) if drop_last else max(1, math.ceil(n / batch_size))


def batches(
    n: int, batch_size: int, rng: np.random.Generator, drop_last: bool = True
) -> Iterator[np.ndarray]:
    """Shuffled, sorted index batches (sorted reads are faster on memmaps).

    With `drop_last`, the last partial batch is dropped unless it is the only one (a tiny last batch gives
    noisy CCC and batch statistics); the order changes every epoch, so every sample is still seen.
    """
    order = rng.permutation(n)
    for step in range(steps_per_epoch(n, batch_size, drop_last)):
        yield np.sort(order[step * batch_size : (step + 1) * batch_size])


def state_on_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (safe to save while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class EMA:
    """Exponential moving average of a model's weights (buffers are copied as they are)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def _save_resume(path: Path, model, optimizer, ema, epoch, step, rng, history) -> None:
    state = {
        "model": state_on_cpu(model),
        "optimizer": optimizer.state_dict(),
        "ema": None if ema is None else state_on_cpu(ema.model),
        "epoch": epoch,
        "step": step,
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-save leaves the previous checkpoint intact


def fit(
    model: nn.Module,
    step: Callable[[np.ndarray], StepResult],
    n_items: int,
    config: FitConfig,
    *,
    device: str | torch.device = "cpu",
    num_layers: int = 0,
    on_epoch_end: Callable[[nn.Module], dict[str, float]] | None = None,
    resume_path: Path | None = None,
    desc: str = "fit",
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train `model` in place.

    Args:
        model: on `device`, in any mode (set to train mode for every epoch).
        step: batch of sample indices [B] -> (loss, {name: float}); runs under autocast. It reads the
            model it closes over, so recipes decide what a batch is (images, windows, masks).
        n_items: number of samples the indices range over.
        config: optimisation knobs.
        device: where the model lives.
        num_layers: ViT depth, for layer-wise lr decay.
        on_epoch_end: model (the EMA copy when EMA is on) -> extra history entries (e.g. validation).
        resume_path: checkpoint written after every epoch; when it exists at the start, training resumes
            from it and ends with the same weights as an uninterrupted run.
        desc: progress bar label.

    Returns:
        The trained model (the EMA copy when EMA is on) and one history record per epoch: epoch, loss,
        loss_<part>, lr, and what `on_epoch_end` returns.
    """
    if config.accumulation < 1:
        raise ValueError(f"accumulation must be >= 1, got {config.accumulation}")
    rng = seed_everything(config.seed)
    channels_last(model, device)
    groups = param_groups(model, config.weight_decay, config.layer_decay, num_layers)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
    distributed.broadcast_parameters(model)  # under torchrun: every process starts from rank 0's weights
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None

    n_batches = steps_per_epoch(n_items, config.batch_size, config.drop_last)
    n_updates = math.ceil(n_batches / config.accumulation)  # the last, partial group steps too
    total, warmup = config.epochs * n_updates, int(config.warmup_epochs * n_updates)
    history: list[dict[str, float]] = []
    start_epoch, update = 0, 0
    if resume_path is not None and Path(resume_path).is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state["ema"] is not None:
            ema.model.load_state_dict(state["ema"])
        start_epoch, update, history = state["epoch"] + 1, state["step"], state["history"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(f"{desc}: resumed after epoch {state['epoch']} from {resume_path}")

    lr_now = config.lr
    for epoch in range(start_epoch, config.epochs):
        model.train()
        sums: dict[str, float] = {"loss": 0.0}
        seen = 0
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(
            enumerate(batches(n_items, config.batch_size, rng, config.drop_last)),
            total=n_batches,
            desc=f"{desc} epoch {epoch}",
            disable=None,
        )
        for i, idx in bar:
            idx = distributed.shard(idx)  # under torchrun: this process's share of the global batch
            with autocast(device):
                loss, parts = step(idx)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{desc}: loss is {value} at epoch {epoch}, batch {i}; stopping "
                    "(lower the lr or check the inputs for NaN / huge values)"
                )
            (loss / config.accumulation).backward()
            if (i + 1) % config.accumulation == 0 or i + 1 == n_batches:
                lr_now = get_lr(update, total, warmup, config.lr, config.min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr_now * group["lr_scale"]
                distributed.average_gradients(model)  # under torchrun: the global batch's gradient
                if config.clip_grad:
                    nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                update += 1
            sums["loss"] += value * len(idx)
            for name, part in parts.items():
                sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0.0) + part * len(idx)
            seen += len(idx)
        totals = distributed.sum_over_processes(sums | {"_seen": float(seen)})
        seen_all = totals.pop("_seen")
        record = {"epoch": epoch} | {k: v / seen_all for k, v in totals.items()} | {"lr": lr_now}
        if on_epoch_end is not None:
            record |= on_epoch_end(ema.model if ema is not None else model)
        history.append(record)
        if resume_path is not None and distributed.is_main():  # one writer of the shared file
            _save_resume(Path(resume_path), model, optimizer, ema, epoch, update, rng, history)
    return (ema.model if ema is not None else model), history
