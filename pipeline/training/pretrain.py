"""Recipe: MAE pretraining of a face encoder (He et al., 2022; the seeds' MAE-Face step).

Checkpoint: `{"model": encoder state, "encoder", "encoder_kwargs", "feature_dim", "config",
"mae": {"kwargs", "state"}}`; `mae` holds the decoder (for previews; encoder loaders ignore it).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import PretrainConfig
from pipeline.inference.images import denormalize, to_tensor_batch
from pipeline.models.encoders import (
    create_encoder,
    encoder_kwargs,
    feature_dim,
    input_size,
    load_encoder_checkpoint,
)
from pipeline.models.mae import MaskedAutoencoder
from pipeline.training.augment import random_resized_crop_flip
from pipeline.training.loop import FitConfig, fit, state_on_cpu

DECODER_HEADS = 4


def pretrain_mae(
    images: np.ndarray,
    config: PretrainConfig,
    *,
    device: str = "cpu",
    encoder_overrides: dict[str, Any] | None = None,
    resume_path: Path | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Pretrain an encoder as a masked autoencoder on face crops (or continue from `config.init`).

    Args:
        images: uint8 [N, H, W, 3] RGB crops (resized to the encoder's input size on the fly).
        config: the `pretrain` params (encoder, init, mask ratio, decoder size, augmentation, schedule).
        device: "cpu" or "cuda[:i]" (bf16 autocast on CUDA).
        encoder_overrides: architecture kwargs replacing the registry entry's (e.g. `depth` in tests);
            saved in the checkpoint's `encoder_kwargs`.
        resume_path: training state written after every epoch; an interrupted run resumes from it.

    Returns:
        checkpoint (encoder weights in timm naming + decoder under "mae"), history (one dict per epoch).
        With `config.epochs == 0` (an init checkpoint used as it is) the checkpoint has no "mae" entry.
    """
    torch.manual_seed(config.seed)  # the model's init draws from the global RNG
    arch_kwargs = encoder_kwargs(config.encoder, **(encoder_overrides or {}))
    encoder = create_encoder(config.encoder, **arch_kwargs)
    if config.init:
        # An external encoder (MAE reference, MAE-Face, HF ViTMAE), pos_embed resampled to this input.
        load_encoder_checkpoint(encoder, config.init, layout=config.init_layout)
    summary = {"num_images": int(len(images)), "init": config.init or None}
    if config.epochs == 0:
        if not config.init:
            raise ValueError("pretrain.epochs 0 skips pretraining only when pretrain.init names a checkpoint")
        return _checkpoint(encoder, config, arch_kwargs, summary), []

    mae_kwargs = {
        "mask_ratio": config.mask_ratio,
        "decoder_dim": config.decoder_dim,
        "decoder_depth": config.decoder_depth,
        "decoder_heads": DECODER_HEADS,
        "norm_pix_loss": config.norm_pix_loss,
    }
    # A loaded encoder keeps its own position embedding (sin-cos in the MAE reference, resampled here).
    model = MaskedAutoencoder(encoder, **mae_kwargs, fixed_pos_embed=not config.init).to(device)
    size = input_size(model.encoder)
    augment = None
    if config.crop_scale_min < 1.0 or config.hflip:

        def augment(x: torch.Tensor) -> torch.Tensor:
            # torch's global RNG (seeded by `fit`, saved in its resume state): a resumed run draws the
            # same crops as an uninterrupted one.
            return random_resized_crop_flip(x, None, scale=(config.crop_scale_min, 1.0), hflip=config.hflip)

    def step(idx: np.ndarray):
        loss, _, _ = model(to_tensor_batch(images[idx], device, size=size, augment=augment))
        return loss, {}

    fit_config = FitConfig.from_params(config, betas=(0.9, 0.95))  # betas of the MAE reference
    model, history = fit(
        model, step, len(images), fit_config, device=device, resume_path=resume_path, desc="mae"
    )
    checkpoint = _checkpoint(model.encoder, config, arch_kwargs, summary)
    checkpoint["mae"] = {
        "kwargs": mae_kwargs,
        "state": {k: v for k, v in state_on_cpu(model).items() if not k.startswith("encoder.")},
    }
    return checkpoint, history


def _checkpoint(
    encoder: torch.nn.Module, config: PretrainConfig, arch_kwargs: dict[str, Any], summary: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": state_on_cpu(encoder),
        "encoder": config.encoder,
        "encoder_kwargs": arch_kwargs,
        "feature_dim": feature_dim(encoder),
        "config": asdict(config) | summary,
    }


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

    Args:
        checkpoint: from `pretrain_mae`.
        images: uint8 [n, H, W, 3] (a handful).
        mask_ratio: defaults to the pretraining ratio; masking noise comes from `seed`.

    Returns:
        uint8 [n * S, 3 * S, 3] RGB, S the encoder's input size (save it as a PNG).
    """
    model = load_mae(checkpoint, device)
    x = to_tensor_batch(images, device, size=input_size(model.encoder))
    noise = torch.rand(len(images), model.num_patches, generator=torch.Generator().manual_seed(seed))
    _, pred, mask = model(x, mask_ratio=mask_ratio, noise=noise.to(device))
    masked, pasted = model.reconstruct(x, pred, mask)
    panels = [denormalize(p) for p in (x, masked, pasted)]  # each [n, 3, S, S]
    grid = torch.cat(panels, dim=3)  # side by side: [n, 3, S, 3S]
    grid = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[3], 3)  # rows stacked: [n*S, 3S, 3]
    return (grid * 255).round().to(torch.uint8).cpu().numpy()
