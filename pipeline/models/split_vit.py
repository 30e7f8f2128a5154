"""A ViT cut in two at a block: the frozen lower part runs once per image, the upper part trains.

Fine-tuning only the top blocks of a pretrained encoder (a common cheap recipe, and the one the CPU demo
uses) lets the lower blocks' output be computed once per image and reused every epoch: an epoch then costs
the upper blocks only. `lower_tokens` and `upper_features` together equal `encoder(x)` exactly (a test
checks), so the fine-tuned encoder is saved and used like any other.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer


def freeze_lower(encoder: VisionTransformer, frozen_blocks: int) -> None:
    """Stop gradients for the embeddings and the first `frozen_blocks` blocks."""
    if not 0 <= frozen_blocks <= len(encoder.blocks):
        raise ValueError(f"frozen_blocks must be in [0, {len(encoder.blocks)}], got {frozen_blocks}")
    lower = [encoder.patch_embed, *encoder.blocks[:frozen_blocks]]
    for module in lower:
        module.requires_grad_(False)
    for name in ("cls_token", "pos_embed", "reg_token"):
        parameter = getattr(encoder, name, None)
        if isinstance(parameter, torch.nn.Parameter):
            parameter.requires_grad_(False)


@torch.no_grad()
def lower_tokens(encoder: VisionTransformer, x: torch.Tensor, frozen_blocks: int) -> torch.Tensor:
    """Images [N, 3, H, W] (normalised) -> tokens after the first `frozen_blocks` blocks [N, L, D]."""
    x = encoder.patch_embed(x)
    x = encoder._pos_embed(x)  # timm's own cls token + position embedding step
    x = encoder.norm_pre(encoder.patch_drop(x))
    for block in encoder.blocks[:frozen_blocks]:
        x = block(x)
    return x


def upper_features(encoder: VisionTransformer, tokens: torch.Tensor, frozen_blocks: int) -> torch.Tensor:
    """Tokens from `lower_tokens` -> the pooled feature [N, D] that `encoder(x)` returns."""
    x = tokens
    for block in encoder.blocks[frozen_blocks:]:
        x = block(x)
    return encoder.forward_head(encoder.norm(x))
