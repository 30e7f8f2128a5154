"""A ViT that sees a random subset of its patches: seed 001's masked CoTEX (two ViTs, two random masks).

The mask drops patch tokens after the position embedding (every kept token knows where it came from) and
keeps the class token; the remaining tokens run through the blocks, the final norm and timm's head
(`global_pool="avg"` then averages the kept patch tokens only). Kept tokens stay in patch order, so with
mask_ratio 0 both functions give exactly `encoder(x)` / `split_vit.upper_features`.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer


def keep_random_tokens(
    tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None, num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Keep the prefix (cls) tokens and a random `int(L * (1 - mask_ratio))` patch tokens per sample.

    As `pipeline.models.mae.random_masking`: the patches with the smallest uniform noise are kept; here
    the noise comes from `generator` (CPU) and the kept patches stay in their original order.

    Args:
        tokens: [N, P + L, D], the P prefix tokens first.
        mask_ratio: share of the L patch tokens to drop, in [0, 1).
        generator: CPU generator for the noise (None = torch's global RNG).
        num_prefix_tokens: P.

    Returns:
        [N, P + K, D] with K = int(L * (1 - mask_ratio)).
    """
    if not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    prefix, patches = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
    n, length, dim = patches.shape
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, generator=generator)  # drawn even at ratio 0: same RNG use at any ratio
    ids_keep = torch.argsort(noise, dim=1)[:, :keep].sort(dim=1).values.to(tokens.device)  # [N, K]
    kept = torch.gather(patches, 1, ids_keep[..., None].expand(-1, -1, dim))
    return torch.cat([prefix, kept], dim=1)


def masked_features(
    encoder: VisionTransformer, x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Pooled feature of each image computed from a random subset of its patches (with gradients).

    The steps of timm's `forward_features` with the masking inserted after the position embedding.

    Args:
        encoder: a timm VisionTransformer (`pipeline.models.encoders.create_encoder`).
        x: [N, 3, H, W] normalised images at the encoder's input size.
        mask_ratio: share of patches hidden, in [0, 1).
        generator: CPU generator for the mask.

    Returns:
        [N, D], what `encoder(x)` returns when mask_ratio is 0.
    """
    tokens = encoder._pos_embed(encoder.patch_embed(x))  # [N, 1 + L, D], timm's cls + positions
    tokens = keep_random_tokens(tokens, mask_ratio, generator, encoder.num_prefix_tokens)
    tokens = encoder.norm_pre(encoder.patch_drop(tokens))
    tokens = encoder.blocks(tokens)
    return encoder.forward_head(encoder.norm(tokens))


def masked_upper_features(
    encoder: VisionTransformer,
    tokens: torch.Tensor,
    frozen_blocks: int,
    mask_ratio: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """`masked_features` from cached tokens: mask, then the blocks after `frozen_blocks`.

    The frozen lower blocks (`split_vit.lower_tokens`) saw every patch; only the upper blocks see the
    subset. With frozen_blocks 0 this equals `masked_features` for the same generator state (a test
    checks); with mask_ratio 0 it equals `split_vit.upper_features`.

    Args:
        tokens: [N, 1 + L, D] from `split_vit.lower_tokens(encoder, x, frozen_blocks)`, cls first.
        frozen_blocks: number of blocks already applied to `tokens`.
        mask_ratio: share of patch tokens hidden, in [0, 1).
        generator: CPU generator for the mask.

    Returns:
        [N, D].
    """
    x = keep_random_tokens(tokens, mask_ratio, generator, encoder.num_prefix_tokens)
    for block in encoder.blocks[frozen_blocks:]:
        x = block(x)
    return encoder.forward_head(encoder.norm(x))
