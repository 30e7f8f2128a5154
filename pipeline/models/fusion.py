"""Fusion of the per-frame visual views into one stream (seed 000's dual-view attention fusion).

Seed 000 fine-tunes two MAE encoders separately (full face; eye+mouth view) and fuses their features with an
attention block: a key generator (Mean, Concat, UpDown-Mean or UpDown-Concat), multi-head self-attention plus
a convolutional local attention, a skip connection `Output = Attention(Q, K, V) + X` with X the stronger
input, then an MLP head. The paper gives a few sentences on the block; where it is vague this module takes
the standard reading:

- Tokens: each view, already projected to the model width d (`InputEmbedding`), is one token per frame, so a
  window is [B, T, V, d] with V views. Attention runs across the V view tokens of each frame (frame-wise
  fusion); attention over time is the temporal model's job.
- Keys: the key generator sees all views of the frame at once and emits one key per view token (V x d), so
  how much a view is attended to can depend on what the *other* views show. Its dense layers:
  `mean`: 1 layer on the mean of the views (d -> V*d); `concat`: 1 layer on their concatenation
  (V*d -> V*d); `updown_mean`: 2 layers on the mean, up then down (d -> 2*V*d -> V*d); `updown_concat`:
  3 layers on the concatenation, down to d, up, down (V*d -> d -> 2*V*d -> V*d), our reading of the paper's
  "concatenating ... and then downsampling" followed by an up-down pair. GELU between layers.
- Queries and values: one linear map each, shared by the view tokens (after a LayerNorm, pre-norm as in ViT
  blocks). The V attended tokens are averaged (every view's query counts) and projected: A [B, T, d].
- Local attention: a depthwise 1D convolution over time of A gives per-channel gates sigmoid(conv(A)), so the
  neighbouring frames decide how much of the fused signal passes at each frame (A * gate).
- Skip: `Output = A * gate + X_skip`, X_skip the configured stronger view; with the attention branch silent
  the output is exactly that view, so fusion starts from the better single view and learns what to add.
- The paper's MLP head is the sequence model's temporal body and `TaskHeads` after the fusion.

`sum` is the baseline (and what every model did before fusion existed): the plain sum of the views. With one
view (or none) there is nothing to fuse: every name builds the identity (`SumFusion`), so a single-view
ablation can keep the same `model_kwargs`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class SumFusion(nn.Module):
    """Baseline: the sum of the projected views (no parameters, so no state-dict keys)."""

    def forward(self, views: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """views: [B, T, V, d] -> [B, T, d]."""
        h = views[:, :, 0]
        for i in range(1, views.shape[2]):  # added one by one, in input order, as the models always did
            h = h + views[:, :, i]
        return h


def key_generator(name: str, dim: int, n_views: int) -> tuple[str, nn.Sequential]:
    """The combination of the views ("mean" or "concat") and the dense layers that map it to V keys."""
    widths = {
        "mean": ("mean", [dim, n_views * dim]),
        "concat": ("concat", [n_views * dim, n_views * dim]),
        "updown_mean": ("mean", [dim, 2 * n_views * dim, n_views * dim]),
        "updown_concat": ("concat", [n_views * dim, dim, 2 * n_views * dim, n_views * dim]),
    }
    combine, sizes = widths[name]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Linear(n_in, n_out))
    return combine, nn.Sequential(*layers)


class AttentionFusion(nn.Module):
    """Seed 000's fusion attention block over V >= 2 view tokens per frame (see the module docstring).

    Args:
        dim: width d of every view token.
        n_views: number of views V (>= 2).
        heads: attention heads (dim must be divisible by heads).
        dropout: dropout on the attention branch's output.
        skip_index: which view is the skip connection's X (the stronger view).
        key: key generator, "mean", "concat", "updown_mean" or "updown_concat".
        kernel_size: odd temporal kernel of the local (convolutional) attention.
    """

    def __init__(
        self,
        dim: int,
        n_views: int,
        heads: int = 4,
        dropout: float = 0.0,
        skip_index: int = 0,
        *,
        key: str = "concat",
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if n_views < 2:
            raise ValueError(f"attention fusion needs at least 2 views, got {n_views}")
        if heads < 1 or dim % heads:
            raise ValueError(f"fusion width {dim} is not divisible by fusion heads {heads}")
        if not 0 <= skip_index < n_views:
            raise ValueError(f"skip_index {skip_index} is not one of the {n_views} views")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for a centred convolution, got {kernel_size}")
        self.n_views, self.heads, self.skip_index = n_views, heads, skip_index
        self.norm = nn.LayerNorm(dim)
        self.combine, self.key = key_generator(key, dim, n_views)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.local = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)  # depthwise
        self.drop = nn.Dropout(dropout)

    def qkv(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """views: [B, T, V, d] -> queries, keys, values, each [B, T, heads, V, d / heads]."""
        b, t, v, d = views.shape
        x = self.norm(views)
        combined = x.mean(dim=2) if self.combine == "mean" else x.flatten(2)  # [B, T, d] or [B, T, V*d]
        q, k, val = self.query(x), self.key(combined).view(b, t, v, d), self.value(x)
        return tuple(y.view(b, t, v, self.heads, d // self.heads).transpose(2, 3) for y in (q, k, val))

    def attention_weights(self, views: torch.Tensor) -> torch.Tensor:
        """views: [B, T, V, d] -> softmax weights [B, T, heads, V (queries), V (keys)], for inspection."""
        q, k, _ = self.qkv(views)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)

    def forward(self, views: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """views: [B, T, V, d], pad_mask: [B, T] True on padding -> [B, T, d] (padding stays out)."""
        b, t, v, d = views.shape
        if v != self.n_views:
            raise ValueError(f"fusion built for {self.n_views} views got {v}")
        q, k, val = self.qkv(views)
        a = F.scaled_dot_product_attention(q, k, val)  # [B, T, heads, V, d / heads]: across views only
        a = self.drop(self.proj(a.mean(dim=3).reshape(b, t, d)))  # average over the V queries
        if pad_mask is not None:
            # Zero padding before the temporal convolution (as `TemporalBlock` does), so a padded window's
            # real frames see exactly the zeros an unpadded window sees past its end.
            a = a.masked_fill(pad_mask[..., None], 0.0)
        gate = torch.sigmoid(self.local(a.transpose(1, 2))).transpose(1, 2)  # Conv1d wants [B, d, T]
        return a * gate + views[:, :, self.skip_index]


FusionBuilder = Callable[..., nn.Module]

# name -> builder(dim, n_views, heads, dropout, skip_index)
FUSIONS: dict[str, FusionBuilder] = {
    "sum": lambda dim, n_views, heads=4, dropout=0.0, skip_index=0: SumFusion(),
    "mean": partial(AttentionFusion, key="mean"),
    "concat": partial(AttentionFusion, key="concat"),
    "updown_mean": partial(AttentionFusion, key="updown_mean"),
    "updown_concat": partial(AttentionFusion, key="updown_concat"),
}


def create_fusion(
    name: str, dim: int, n_views: int, heads: int = 4, dropout: float = 0.0, skip_index: int = 0
) -> nn.Module:
    """Build a fusion `module(views [B, T, V, d], pad_mask [B, T] | None) -> [B, T, d]`.

    Args:
        name: a `FUSIONS` key.
        dim: width d of the view tokens.
        n_views: number of views V; with fewer than 2 every name gives the identity (`SumFusion`).
        heads: attention heads (attention fusions).
        dropout: dropout on the attention branch.
        skip_index: index of the stronger view, the skip connection's X (attention fusions).
    """
    if name not in FUSIONS:
        raise KeyError(f"unknown fusion '{name}' (known: {', '.join(FUSIONS)})")
    if n_views >= 1 and not 0 <= skip_index < n_views:
        raise ValueError(f"skip_index {skip_index} is not one of the {n_views} views")
    if n_views < 2:
        return SumFusion()
    return FUSIONS[name](dim, n_views, heads, dropout, skip_index)
