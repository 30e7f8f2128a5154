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
optional extra keys (fine-tuning heads, the MAE decoder) that loaders ignore. Foreign checkpoints (MAE
reference, MAE-Face, HuggingFace ViTMAE) are mapped to our naming by `pipeline.models.checkpoints`.
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

from pipeline.models.checkpoints import CheckpointKeyError, format_keys, to_timm_state

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
def vit_base_112() -> dict[str, Any]:
    """ViT-Base/16 on 112x112 crops (7x7 patches): the public MAE / MAE-Face ViT-B weights with the position
    embedding resampled, at a quarter of the tokens of 224 px (the `cpu` preset)."""
    return {"img_size": 112, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12}


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


def _state_dict_of(
    path_or_state: str | Path | dict[str, Any], layout: str = "auto"
) -> dict[str, torch.Tensor]:
    """The encoder weights in timm naming inside a checkpoint file, a checkpoint dict or a state dict.

    Files are read with `load_checkpoint`, or with safetensors for `.safetensors` (HuggingFace's default
    format); `pipeline.models.checkpoints.to_timm_state` then unwraps and maps `layout` to timm names.
    """
    if isinstance(path_or_state, (str, Path)):
        path = Path(path_or_state)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # a timm dependency

            path_or_state = load_file(path, device="cpu")
        else:
            path_or_state = load_checkpoint(path)
    return to_timm_state(path_or_state, layout)


# Freshly initialised when absent from the checkpoint (the MAE reference asserts the same set when it
# fine-tunes with global pooling). Keys dropped from foreign checkpoints are listed per layout in
# `pipeline.models.checkpoints` (decoder, mask token, classifier head).
ALLOWED_MISSING = {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}


def _check_final_norm(encoder: VisionTransformer, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Match the checkpoint's final norm (`norm` per token, or `fc_norm` after pooling) to the encoder's.

    An `fc_norm` encoder takes a pretraining checkpoint's `norm` out and starts `fc_norm` fresh, as MAE
    reference fine-tuning does. A checkpoint whose trained `fc_norm` replaced `norm` needs an `fc_norm`
    encoder: loading it into a `norm` encoder would leave the norm untrained, so it is an error.
    """
    encoder_has_norm = not isinstance(encoder.norm, nn.Identity)
    encoder_has_fc_norm = not isinstance(encoder.fc_norm, nn.Identity)
    has_norm = any(k.startswith("norm.") for k in state)
    has_fc_norm = any(k.startswith("fc_norm.") for k in state)
    if has_fc_norm and not has_norm and encoder_has_norm and not encoder_has_fc_norm:
        raise CheckpointKeyError(
            "the checkpoint pools with `fc_norm` (MAE-style fine-tuning with global pooling) and has no "
            "final `norm`, but this encoder has `norm` and no `fc_norm`: build the encoder with "
            "`create_encoder(name, fc_norm=True)` (import_checkpoint(..., fc_norm=True))"
        )
    if has_norm and not encoder_has_norm and encoder_has_fc_norm:
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    return state


def load_encoder_checkpoint(
    encoder: VisionTransformer, path_or_state: str | Path | dict[str, Any], layout: str = "auto"
) -> VisionTransformer:
    """Load encoder weights from our checkpoints or a foreign layout, checking keys strictly.

    The weights go through `pipeline.models.checkpoints.to_timm_state` (layouts "timm": ours and the MAE
    reference, "mae_face", "vitmae_hf": HuggingFace ViTMAE; "auto" detects), which drops decoders, mask
    tokens and classifier heads and rejects keys it does not know. Then:
    - final norm: an encoder built with `fc_norm=True` drops the checkpoint's per-token `norm` (as MAE
      fine-tuning does); a checkpoint with `fc_norm` and no `norm` needs such an encoder (else an error);
    - the position embedding [1, 1 + L, D] is resampled (bicubic, cls position kept) when the checkpoint's
      patch grid differs from the encoder's (another `img_size`);
    - the keys must match the encoder's exactly, but for `ALLOWED_MISSING`, and so must the shapes.

    Args:
        encoder: the model to fill, in place.
        path_or_state: a checkpoint path (`.pth`, `.pt`, `.bin`, `.safetensors`), a checkpoint dict or a
            state dict.
        layout: a `pipeline.models.checkpoints.LAYOUTS` key, or "auto".

    Returns:
        The same encoder.

    Raises:
        KeyError (CheckpointKeyError): unknown keys for the layout, or keys missing from / unexpected by
            this encoder (a wrong architecture); the message lists them.
        ValueError: tensors whose shapes differ from the encoder's (other than a resampled `pos_embed`).
    """
    state = _check_final_norm(encoder, _state_dict_of(path_or_state, layout))

    pos_embed = state.get("pos_embed")
    if pos_embed is not None and pos_embed.shape[1] != encoder.pos_embed.shape[1]:
        state["pos_embed"] = resample_abs_pos_embed(
            pos_embed,
            new_size=list(encoder.patch_embed.grid_size),
            num_prefix_tokens=encoder.num_prefix_tokens,
        )

    own = encoder.state_dict()
    unexpected = set(state) - set(own)
    missing = set(own) - set(state) - ALLOWED_MISSING
    if unexpected or missing:
        raise CheckpointKeyError(
            "the checkpoint does not fit this encoder (wrong architecture or registry entry?): "
            f"{len(missing)} missing keys: {format_keys(missing) or '-'}; "
            f"{len(unexpected)} unexpected keys: {format_keys(unexpected) or '-'}"
        )
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(
            f"checkpoint tensors have other shapes than this encoder's (checkpoint vs encoder): "
            f"{format_keys(wrong)}"
        )
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
    path_or_state: str | Path | dict[str, Any], name: str, layout: str = "auto", **overrides: Any
) -> dict[str, Any]:
    """Wrap external encoder weights (MAE reference, MAE-Face, HuggingFace ViTMAE) into our checkpoint format.

    The weights go through `load_encoder_checkpoint` (layout mapping, strict key checks, pos_embed
    resampling), so the result can seed `pipeline.training.finetune.finetune_encoder(init=...)` or
    `extract_features` directly.

    Args:
        path_or_state: external checkpoint path or dict.
        name: registry entry with the matching architecture (e.g. "vit_base_224" for ViT-B/16 MAE weights).
        layout: a `pipeline.models.checkpoints.LAYOUTS` key, or "auto" to detect it from the keys.
        **overrides: architecture overrides (e.g. `img_size=112` to resample to smaller crops, `fc_norm=True`
            for a checkpoint fine-tuned with global pooling).
    """
    kwargs = encoder_kwargs(name, **overrides)
    encoder = load_encoder_checkpoint(create_encoder(name, **kwargs), path_or_state, layout)
    source = str(path_or_state) if isinstance(path_or_state, (str, Path)) else "state dict"
    return {
        "model": {k: v.detach().clone() for k, v in encoder.state_dict().items()},
        "encoder": name,
        "encoder_kwargs": kwargs,
        "feature_dim": feature_dim(encoder),
        "config": {"source": source},
    }
