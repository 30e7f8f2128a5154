"""Encoder checkpoints from other code bases: key layouts mapped to the project's timm ViT naming.

Our encoders are timm `VisionTransformer`s (see `pipeline.models.encoders`), so their weights are named
`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`
and `norm.*` (or `fc_norm.*` when pooled features get their own norm). A layout is a function from a
foreign state dict to that naming. Every key of the input is either mapped or dropped on purpose
(decoders, mask tokens, classifier heads): an unknown key is an error, never silently ignored.

Layouts (`LAYOUTS`, the config's `pretrain.init_layout`; "auto" detects one from the keys):
    timm: the MAE reference (facebookresearch/mae) checkpoints and ours, which already use timm naming.
    mae_face: FuxiVirtualHuman/MAE-Face releases; the same mapping as `timm` (see `timm_layout`).
    vitmae_hf: HuggingFace transformers `ViTMAEModel` / `ViTMAEForPreTraining` (see `vitmae_hf_layout`).

`to_timm_state` only renames: checking the result against an encoder (missing and unexpected keys,
shapes, position-embedding resampling) is `pipeline.models.encoders.load_encoder_checkpoint`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor


class CheckpointKeyError(KeyError):
    """The keys of a checkpoint fit neither a layout nor an encoder.

    A KeyError (what callers already catch), printed as its plain message instead of KeyError's repr.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def format_keys(keys: Iterable[str], limit: int = 10) -> str:
    """The keys sorted, the first `limit` of them and then how many more (for error messages)."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def unwrap_state(state_or_checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict inside a checkpoint, with DistributedDataParallel's `module.` prefix removed.

    Accepts `{"model": state, ...}` (MAE reference, MAE-Face, ours), `{"state_dict": state, ...}` or a
    bare state dict (HuggingFace `pytorch_model.bin` / `model.safetensors`). The other entries of a
    checkpoint (`optimizer`, `epoch`, `args`, our `encoder_kwargs`...) are not weights and are left out.
    """
    state = state_or_checkpoint
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise TypeError(
            f"not a state dict (no 'model' or 'state_dict' entry either): "
            f"the values of {format_keys(not_tensors)} are not tensors"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _check_all_known(layout: str, unknown: list[str]) -> None:
    """Raise when a layout met keys it neither maps nor drops."""
    if unknown:
        raise CheckpointKeyError(
            f"{len(unknown)} checkpoint keys are neither mapped nor dropped by layout '{layout}': "
            f"{format_keys(unknown)}"
        )


# Top-level names of timm's VisionTransformer that hold encoder weights: kept as they are. Our encoders
# use the first ones; `reg_token` and `norm_pre` exist with some timm overrides, kept so those load too.
TIMM_ENCODER_NAMES = (
    "cls_token",
    "pos_embed",
    "patch_embed",
    "blocks",
    "norm",
    "fc_norm",
    "reg_token",
    "norm_pre",
)
# Top-level names that are not the encoder: the MAE reference decoder (`decoder_*`, `mask_token`) and
# the classifier `head` of a fine-tuned model.
TIMM_DROPPED_NAMES = (
    "decoder_embed",
    "decoder_pos_embed",
    "decoder_blocks",
    "decoder_norm",
    "decoder_pred",
    "mask_token",
    "head",
)


def timm_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys in timm VisionTransformer naming: keep the encoder, drop the decoder and the head.

    Serves three sources that all name weights like timm's VisionTransformer:
    - the MAE reference (facebookresearch/mae): `main_pretrain.py` saves `{"model", "optimizer", "epoch",
      "scaler", "args"}` whose model holds the encoder plus `decoder_embed.*`, `mask_token`,
      `decoder_pos_embed`, `decoder_blocks.*`, `decoder_norm.*`, `decoder_pred.*` (dropped);
      `main_finetune.py` with global pooling saves `fc_norm.*` instead of `norm.*`, plus `head.*` (dropped);
    - MAE-Face (layout `mae_face`): its `models_vit.py` subclasses timm's VisionTransformer exactly like
      the MAE reference, and `mae_face_pretrain_vit_base.pth` is `{"model": state}` in the same naming,
      decoder keys included. Nothing differs but the keys present, so the mapping is this function;
    - our own checkpoints.
    Only the top-level name is checked here (`blocks`, `norm`...); the names inside a block are checked
    against the encoder when loading.

    Args:
        state: unwrapped state dict (see `unwrap_state`).

    Returns:
        The encoder's weights, same names and tensors.
    """
    kept, unknown = {}, []
    for key, value in state.items():
        top = key.split(".")[0]
        if top in TIMM_ENCODER_NAMES:
            kept[key] = value
        elif top not in TIMM_DROPPED_NAMES:
            unknown.append(key)
    _check_all_known("timm", unknown)
    return kept


# HuggingFace ViTMAE names -> timm names, outside the transformer layers.
HF_TOP_NAMES = {
    "embeddings.cls_token": "cls_token",  # [1, 1, D]
    "embeddings.position_embeddings": "pos_embed",  # [1, 1 + L, D], cls position first as in timm
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",  # conv [D, 3, P, P]
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Inside `encoder.layer.N.`: HuggingFace module -> timm module of `blocks.N.` (q, k, v are merged apart).
HF_LAYER_NAMES = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
HF_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
# `ViTMAEForPreTraining.decoder` (decoder_embed, mask_token, decoder_pos_embed, decoder_layers,
# decoder_norm, decoder_pred); `classifier` is the head of a transformers image classifier.
HF_DROPPED_NAMES = ("decoder", "classifier")


def vitmae_hf_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HuggingFace transformers ViTMAE naming (`modeling_vit_mae.py`) to timm naming.

    `ViTMAEForPreTraining` puts the encoder under `vit.` and the decoder under `decoder.` (dropped);
    `ViTMAEModel` has the encoder keys with no prefix. Mapping (N = layer index):
        embeddings.cls_token / position_embeddings      -> cls_token / pos_embed
        embeddings.patch_embeddings.projection.*        -> patch_embed.proj.*
        encoder.layer.N.layernorm_before.*              -> blocks.N.norm1.*
        encoder.layer.N.attention.attention.{query,key,value}.*  -> blocks.N.attn.qkv.* (concatenated q, k, v)
        encoder.layer.N.attention.output.dense.*        -> blocks.N.attn.proj.*
        encoder.layer.N.layernorm_after.*               -> blocks.N.norm2.*
        encoder.layer.N.intermediate.dense.*            -> blocks.N.mlp.fc1.*
        encoder.layer.N.output.dense.*                  -> blocks.N.mlp.fc2.*
        layernorm.*                                     -> norm.*
    timm's `qkv` is one Linear whose output rows are [q; k; v], each split into heads the same way as
    HuggingFace's separate query/key/value, so concatenating the three along dim 0 is exact. Note that
    transformers' ViTMAE LayerNorms default to eps=1e-12 where timm uses 1e-6: a negligible difference.

    Args:
        state: unwrapped state dict (see `unwrap_state`).

    Returns:
        The encoder's weights in timm naming.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}  # (layer, "weight"/"bias") -> {q/k/v module: tensor}
    unknown = []
    for key, value in state.items():
        name = key.removeprefix("vit.")
        if name in HF_TOP_NAMES:
            out[HF_TOP_NAMES[name]] = value
            continue
        if name.split(".")[0] in HF_DROPPED_NAMES:
            continue
        parts = name.split(".")  # encoder.layer.N.<module...>.<weight|bias>
        if len(parts) < 5 or parts[:2] != ["encoder", "layer"] or not parts[2].isdigit():
            unknown.append(key)
            continue
        layer, module, param = parts[2], ".".join(parts[3:-1]), parts[-1]
        if param not in ("weight", "bias"):
            unknown.append(key)
        elif module in HF_LAYER_NAMES:
            out[f"blocks.{layer}.{HF_LAYER_NAMES[module]}.{param}"] = value
        elif module in HF_QKV:
            qkv.setdefault((layer, param), {})[module] = value
        else:
            unknown.append(key)
    _check_all_known("vitmae_hf", unknown)

    for (layer, param), parts_of in qkv.items():
        absent = [m for m in HF_QKV if m not in parts_of]
        if absent:
            raise CheckpointKeyError(
                f"layer {layer} has no {', '.join(f'{m}.{param}' for m in absent)}: cannot build its qkv"
            )
        out[f"blocks.{layer}.attn.qkv.{param}"] = torch.cat([parts_of[m] for m in HF_QKV], dim=0)
    return out


LAYOUTS: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
    "timm": timm_layout,
    "mae_face": timm_layout,  # MAE-Face names its weights like the MAE reference (see timm_layout)
    "vitmae_hf": vitmae_hf_layout,
}


def _looks_like(state: Mapping[str, Tensor]) -> list[str]:
    """The layouts whose characteristic keys appear in `state` (`mae_face` is reported as `timm`)."""
    found = []
    if any(k.split(".")[0] in ("cls_token", "pos_embed", "patch_embed", "blocks") for k in state):
        found.append("timm")
    if any(k.removeprefix("vit.").startswith(("embeddings.", "encoder.layer.")) for k in state):
        found.append("vitmae_hf")
    return found


def detect_layout(state_or_checkpoint: Mapping[str, Any]) -> str:
    """The layout whose characteristic keys the checkpoint has.

    timm naming (`patch_embed`, `blocks`...) gives "timm", also for MAE-Face: both use the same names,
    so the keys cannot tell them apart and the mapping is the same. HuggingFace naming (`embeddings.`,
    `encoder.layer.`, with or without `vit.`) gives "vitmae_hf".

    Args:
        state_or_checkpoint: a checkpoint or a state dict (see `unwrap_state`).

    Raises:
        CheckpointKeyError: no layout or more than one fits; the message shows some of the keys.
    """
    state = unwrap_state(state_or_checkpoint)
    found = _looks_like(state)
    if len(found) == 1:
        return found[0]
    what = "keys of several layouts" if found else "no known ViT encoder key"
    raise CheckpointKeyError(
        f"cannot detect the checkpoint layout ({what}; known layouts: {', '.join(LAYOUTS)}); "
        f"its {len(state)} keys include: {format_keys(state, limit=8)}"
    )


def to_timm_state(state_or_checkpoint: Mapping[str, Any], layout: str = "auto") -> dict[str, Tensor]:
    """Encoder weights of any supported checkpoint, in the project's timm ViT naming.

    Unwraps `{"model": ...}` / `{"state_dict": ...}` / bare dicts, strips `module.`, then applies the
    layout's mapping, which drops decoders, mask tokens and classifier heads.

    Args:
        state_or_checkpoint: a loaded checkpoint or state dict.
        layout: a `LAYOUTS` key, or "auto" to detect it (`detect_layout`).

    Returns:
        {timm name: tensor}; shapes as in the checkpoint (e.g. `pos_embed` [1, 1 + L, D], not resampled).

    Raises:
        ValueError: unknown layout name.
        CheckpointKeyError: a key the layout neither maps nor drops (the message says which layout the
            keys look like when it is another one), or an undetectable layout.
    """
    state = unwrap_state(state_or_checkpoint)
    if layout == "auto":
        layout = detect_layout(state)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout '{layout}' (known: auto, {', '.join(LAYOUTS)})")
    try:
        return LAYOUTS[layout](state)
    except CheckpointKeyError as err:
        other = [name for name in _looks_like(state) if LAYOUTS[name] is not LAYOUTS[layout]]
        if not other:
            raise
        raise CheckpointKeyError(
            f"{err}. These keys look like layout '{other[0]}': pass layout='{other[0]}' or 'auto'"
        ) from err
