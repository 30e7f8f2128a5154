"""Image encoders: a registry of timm VisionTransformers, checkpoint helpers and weight loading.

Every encoder is a plain `timm.models.vision_transformer.VisionTransformer` with `num_classes=0`, so
`encoder(x)` returns the pooled feature [N, D] and `forward_features` / `forward_head` work as in timm.

Pooling: the mean of the patch tokens (`global_pool="avg"`) after the final per-token LayerNorm
(`fc_norm=False`). With this choice the encoder has exactly the parameters of the MAE reference encoder
(`norm` and no `fc_norm`), so a MAE pretraining checkpoint loads with no missing key and the norm learnt
during pretraining is kept, and mean pooling is what the MAE reference fine-tunes with (it beats the
class token there). Override with `create_encoder(name, fc_norm=True)` to load a checkpoint that was
fine-tuned by the MAE reference (`fc_norm` + `head`, no `norm`).

Checkpoints we save are dicts of plain types and tensors (never pickled modules):
`{"model": state_dict, "encoder": name, "encoder_kwargs": {...}, "feature_dim": D, "config": {...}}`, plus
optional extra keys (fine-tuning heads, the MAE decoder) that loaders ignore.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

# Architecture kwargs shared by every entry; an entry or a caller's override replaces any of them.
COMMON_KWARGS: dict[str, Any] = {
    "num_classes": 0,  # no classifier: encoder(x) returns the pooled feature
    "global_pool": "avg",  # mean of the patch tokens (the MAE reference's fine-tuning choice)
    "fc_norm": False,  # keep the per-token `norm` of the MAE encoder instead of a fresh norm after pooling
    "class_token": True,  # MAE reference layout: one cls token with its own position embedding
    "qkv_bias": True,
    "mlp_ratio": 4.0,
}

# Training-time knobs accepted by create_encoder that do not describe the architecture (not saved).
TRAINING_KWARGS = ("drop_path_rate", "drop_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate")

ENCODERS: dict[str, Callable[[], dict[str, Any]]] = {}


def register_encoder(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Register a function that returns VisionTransformer kwargs under the function's name."""
    if fn.__name__ in ENCODERS:
        raise ValueError(f"encoder '{fn.__name__}' is already registered")
    ENCODERS[fn.__name__] = fn
    return fn


@register_encoder
def vit_tiny_80() -> dict[str, Any]:
    """ViT-Tiny-like on 80x80 inputs (5x5 patches), 6 blocks: the demo default, sized so that one encoder
    per evaluation run (fine-tuning + feature extraction) fits a 2-core CPU; half the cost of 112 px."""
    return {"img_size": 80, "patch_size": 16, "embed_dim": 192, "depth": 6, "num_heads": 3}


@register_encoder
def vit_tiny_112() -> dict[str, Any]:
    """ViT-Tiny-like on 112x112 crops (7x7 patches), 6 blocks: the CPU demo default."""
    return {"img_size": 112, "patch_size": 16, "embed_dim": 192, "depth": 6, "num_heads": 3}


@register_encoder
def vit_small_112() -> dict[str, Any]:
    """ViT-Small/16 on 112x112 crops."""
    return {"img_size": 112, "patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6}


@register_encoder
def vit_base_224() -> dict[str, Any]:
    """ViT-Base/16 at 224x224: the seeds' real-scale encoder, same layout as the MAE reference weights."""
    return {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12}


def encoder_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The full architecture kwargs of a registry entry with overrides (training-only knobs removed)."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
    kwargs = {**COMMON_KWARGS, **ENCODERS[name](), **overrides}
    return {k: v for k, v in kwargs.items() if k not in TRAINING_KWARGS}


def create_encoder(name: str, **overrides: Any) -> VisionTransformer:
    """Build a registered encoder with random weights.

    Args:
        name: registry key (see `ENCODERS`).
        **overrides: VisionTransformer kwargs replacing the entry's (`drop_path_rate=0.1`, `img_size=224`).

    Returns:
        A timm VisionTransformer; `encoder(x [N, 3, H, W])` returns features [N, feature_dim(encoder)].
    """
    kwargs = {**encoder_kwargs(name), **overrides}
    return VisionTransformer(**kwargs)


def feature_dim(encoder: VisionTransformer) -> int:
    """Size D of the pooled feature the encoder returns."""
    return int(encoder.num_features)


def input_size(encoder: VisionTransformer) -> tuple[int, int]:
    """(H, W) the encoder takes."""
    return tuple(int(s) for s in encoder.patch_embed.img_size)


def registry_input_size(name: str) -> int:
    """Input side of a registered encoder, without building it (for config checks)."""
    return int(encoder_kwargs(name)["img_size"])


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint dict (tensors and plain Python values only) with torch.save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on CPU with `weights_only=True`.

    `argparse.Namespace` is allowed because MAE reference training checkpoints store their `args` in one.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(Path(path), map_location="cpu", weights_only=True)


def _state_dict_of(path_or_state: str | Path | dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder state dict inside a path, a checkpoint dict (`model` key) or a bare state dict."""
    state = load_checkpoint(path_or_state) if isinstance(path_or_state, (str, Path)) else path_or_state
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    # Checkpoints saved from DistributedDataParallel prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in state.items()}


# Keys of a MAE reference checkpoint that are not part of the encoder: the decoder and the mask token.
DROPPED_PREFIXES = ("decoder_", "mask_token", "head.")
# Freshly initialised when absent from the checkpoint (the MAE reference asserts the same set).
ALLOWED_MISSING = {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}


def load_encoder_checkpoint(
    encoder: VisionTransformer, path_or_state: str | Path | dict[str, Any]
) -> VisionTransformer:
    """Load encoder weights from our checkpoints or the MAE reference format, checking keys strictly.

    Accepted: `{"model": state_dict}` with timm ViT naming (MAE reference, MAE-Face, ours) or a bare
    state dict. Dropped on purpose: `decoder_*`, `mask_token`, a classifier `head.*`, and the encoder's
    final `norm.*` when the encoder pools with a fresh `fc_norm` instead (as MAE reference fine-tuning does).
    The position embedding is resampled when the checkpoint's patch grid differs.

    Args:
        encoder: the model to fill, in place.
        path_or_state: a checkpoint path, a checkpoint dict or a state dict.

    Returns:
        The same encoder.

    Raises:
        KeyError: the checkpoint has encoder keys this encoder lacks, or misses keys other than
            `ALLOWED_MISSING` (a wrong architecture or a non-encoder checkpoint).
    """
    state = _state_dict_of(path_or_state)
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}
    if isinstance(encoder.norm, nn.Identity):
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}

    if "pos_embed" in state and state["pos_embed"].shape != encoder.pos_embed.shape:
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"],
            new_size=list(encoder.patch_embed.grid_size),
            num_prefix_tokens=encoder.num_prefix_tokens,
        )

    own_keys = set(encoder.state_dict())
    unexpected = sorted(set(state) - own_keys)
    if unexpected:
        raise KeyError(f"checkpoint has keys this encoder lacks (wrong architecture?): {unexpected}")
    missing = sorted(own_keys - set(state) - ALLOWED_MISSING)
    if missing:
        raise KeyError(f"checkpoint misses encoder keys: {missing}")
    encoder.load_state_dict(state, strict=False)
    return encoder


def encoder_from_checkpoint(checkpoint: dict[str, Any], **overrides: Any) -> VisionTransformer:
    """Rebuild the encoder a checkpoint of ours describes and load its weights.

    Args:
        checkpoint: `{"model", "encoder", "encoder_kwargs", ...}` as written by the training engine.
        **overrides: extra kwargs for `create_encoder`, e.g. `drop_path_rate` for fine-tuning.
    """
    kwargs = {**checkpoint.get("encoder_kwargs", {}), **overrides}
    encoder = create_encoder(checkpoint["encoder"], **kwargs)
    return load_encoder_checkpoint(encoder, checkpoint)


def import_checkpoint(
    path_or_state: str | Path | dict[str, Any], name: str, **overrides: Any
) -> dict[str, Any]:
    """Wrap external encoder weights (MAE reference, MAE-Face) into our checkpoint format.

    The weights go through `load_encoder_checkpoint` (strict key checks, pos_embed resampling), so the
    result can seed `pipeline.training.finetune.finetune_encoder(init=...)` or `extract_features` directly.

    Args:
        path_or_state: external checkpoint path or dict.
        name: registry entry with the matching architecture (e.g. "vit_base_224" for ViT-B/16 MAE weights).
        **overrides: architecture overrides (e.g. `img_size=112` to resample to smaller crops).
    """
    kwargs = encoder_kwargs(name, **overrides)
    encoder = load_encoder_checkpoint(create_encoder(name, **kwargs), path_or_state)
    source = str(path_or_state) if isinstance(path_or_state, (str, Path)) else "state dict"
    return {
        "model": {k: v.detach().clone() for k, v in encoder.state_dict().items()},
        "encoder": name,
        "encoder_kwargs": kwargs,
        "feature_dim": feature_dim(encoder),
        "config": {"source": source},
    }
