"""Masked autoencoder (He et al., 2022) around a timm VisionTransformer from `pipeline.models.encoders`.

The encoder is the very module that fine-tuning and feature extraction use later; this wrapper only adds
the masking, a small ViT decoder and the pixel loss, with the MAE reference's names (`mask_token`,
`decoder_*`), so the encoder's state dict is a MAE-reference-format encoder.

Use `MaskedAutoencoder.forward` only for pretraining and previews: it masks `mask_ratio` of the patches.
Features come from `encoder(x)` (see `pipeline.inference.images.extract_features`).
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn


def sincos_pos_embed_2d(dim: int, grid_size: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding, as in the MAE reference.

    The first half of the channels encodes the column, the second half the row; prefix tokens (cls) get zeros.

    Returns:
        [1, num_prefix_tokens + gh * gw, dim] float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    gh, gw = grid_size
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij"
    )

    def embed_1d(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]  # [G, dim / 4]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # [G, dim / 2]

    emb = torch.cat([embed_1d(cols), embed_1d(rows)], dim=1)  # [G, dim]
    emb = torch.cat([torch.zeros(num_prefix_tokens, dim, dtype=torch.float64), emb], dim=0)
    return emb.float()[None]


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample (argsort of uniform noise, as in the MAE reference).

    Args:
        x: [N, L, D] patch tokens.
        mask_ratio: fraction of tokens to drop; `int(L * (1 - mask_ratio))` are kept.
        noise: optional [N, L] noise deciding the order (small values are kept), for reproducible tests.

    Returns:
        x_visible [N, K, D], mask [N, L] (1 = masked, 0 = kept), ids_restore [N, L] (undoes the shuffle).
    """
    n, length, dim = x.shape
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(n, length, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_visible = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, dim))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to patch order
    return x_visible, mask, ids_restore


class MaskedAutoencoder(nn.Module):
    """MAE pretraining model: masked ViT encoder (timm) + light ViT decoder predicting patch pixels.

    Args:
        encoder: a VisionTransformer with one class token and an absolute position embedding that covers
            it (`pipeline.models.encoders.create_encoder` builds these).
        mask_ratio: fraction of patches hidden from the encoder (0.75 in the MAE reference and the seeds).
        decoder_dim: decoder width (512 in the reference; 128 is enough for small crops).
        decoder_depth: decoder blocks (8 in the reference).
        decoder_heads: decoder attention heads.
        norm_pix_loss: regress per-patch normalised pixels (the reference's better setting).
        fixed_pos_embed: overwrite the encoder's position embedding with fixed 2D sin-cos values, as the
            reference pretrains (False keeps the values of a loaded checkpoint, e.g. continued pretraining
            from MAE-Face). Either way it is frozen during pretraining; fine-tuning trains it as an ordinary
            parameter.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
        fixed_pos_embed: bool = True,
    ) -> None:
        super().__init__()
        if encoder.cls_token is None or encoder.num_prefix_tokens != 1 or encoder.no_embed_class:
            raise ValueError("MaskedAutoencoder needs a ViT with exactly one class token inside pos_embed")
        if encoder.pos_embed is None:
            raise ValueError("MaskedAutoencoder needs an absolute position embedding")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = int(encoder.patch_embed.patch_size[0])
        self.grid_size = tuple(int(g) for g in encoder.patch_embed.grid_size)
        embed_dim = encoder.embed_dim

        if fixed_pos_embed:
            with torch.no_grad():
                encoder.pos_embed.copy_(sincos_pos_embed_2d(embed_dim, self.grid_size))
        encoder.pos_embed.requires_grad_(False)

        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed, so not saved: rebuilt from the grid size.
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_2d(decoder_dim, self.grid_size), persistent=False
        )
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * 3)
        self._init_decoder()

    def _init_decoder(self) -> None:
        # The reference's init: xavier-uniform linears, N(0, 0.02) mask token. The encoder keeps timm's init.
        nn.init.normal_(self.mask_token, std=0.02)
        for name, module in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, 3, H, W] -> patches [N, L, p*p*3] (row-major patches, pixels (p, q, channel))."""
        p = self.patch_size
        n, c, h, w = imgs.shape
        gh, gw = h // p, w // p
        x = imgs.reshape(n, c, gh, p, gw, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, gh * gw, p * p * c)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: [N, L, p*p*3] -> imgs [N, 3, H, W] (inverse of `patchify`)."""
        p = self.patch_size
        gh, gw = self.grid_size
        n = patches.shape[0]
        x = patches.reshape(n, gh, gw, p, p, 3)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, 3, gh * p, gw * p)

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches only.

        Returns:
            latent [N, 1 + K, D] (cls first), mask [N, L], ids_restore [N, L].
        """
        enc = self.encoder
        x = enc.patch_embed(imgs)  # [N, L, D]
        # Positions are added before masking so every kept token remembers where it came from.
        x = x + enc.pos_embed[:, 1:]
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = enc.norm_pre(x)
        x = enc.blocks(x)
        x = enc.norm(x)
        return x, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Fill the masked positions with mask tokens and predict every patch.

        Args:
            latent: [N, 1 + K, D] encoder output (cls first).
            ids_restore: [N, L] from `random_masking`.

        Returns:
            pred [N, L, p*p*3].
        """
        x = self.decoder_embed(latent)  # [N, 1 + K, Dd]
        n, _, dim = x.shape
        length = ids_restore.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length - (x.shape[1] - 1), -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)  # shuffled order: visible first
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, dim))  # patch order
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed.to(x.dtype)
        x = self.decoder_blocks(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, 1:]  # drop cls

    def pixel_targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """Regression targets [N, L, p*p*3]: patches, normalised per patch if `norm_pix_loss`."""
        target = self.patchify(imgs.float())
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches only (visible patches do not count).

        Args:
            imgs: [N, 3, H, W]; pred: [N, L, p*p*3]; mask: [N, L] with 1 = masked.
        """
        per_patch = ((pred.float() - self.pixel_targets(imgs)) ** 2).mean(dim=-1)  # [N, L]
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode, decode, score.

        Args:
            imgs: [N, 3, H, W] normalised images at the encoder's input size.
            mask_ratio: overrides the constructor's ratio.
            noise: optional [N, L] masking noise (see `random_masking`).

        Returns:
            loss (scalar), pred [N, L, p*p*3], mask [N, L] (1 = masked).
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    @torch.no_grad()
    def reconstruct(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images for a preview, in the input's (normalised) space.

        With `norm_pix_loss` the prediction is per-patch normalised, so it is mapped back with the true
        patch's mean and variance (as the reference's visualisation does).

        Returns:
            masked [N, 3, H, W] (masked patches zeroed), pasted [N, 3, H, W] (visible patches from the
            input, masked patches from the prediction).
        """
        target = self.patchify(imgs.float())
        pred = pred.float()
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
            pred = pred * std + mean
        mask = mask[..., None]
        masked = self.unpatchify(target * (1 - mask))
        pasted = self.unpatchify(target * (1 - mask) + pred * mask)
        return masked, pasted
