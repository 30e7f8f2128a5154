"""Temporal models over per-frame features: a registry with one API, windowing and sequence prediction.

Every model maps `x [B, T, D]` (raw features; the model standardises them with statistics stored in its
buffers) and `pad_mask [B, T]` (True = padding, PyTorch's key-padding convention) to
`{task name: [B, T, num_outputs]}`: logits for multiclass / multilabel tasks, values in [-1, 1] (tanh)
for regression.

Entries:
- `tcn_transformer` (seed 003): input projection + dropout -> TCN (dilated residual convolutions,
  non-causal, dilations 1, 2, 4, ...) -> Transformer encoder with sinusoidal positions -> per-task MLP heads.
- `tcn`, `transformer`: the seed's ablations without the Transformer or without the TCN.
- `mlp`: per-frame MLP, no temporal context (the baseline temporal context has to beat).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.tasks.definitions import Task


def task_probabilities(task: Task, outputs: torch.Tensor) -> torch.Tensor:
    """Model outputs -> what gets averaged and scored: softmax (multiclass), sigmoid (multilabel), values."""
    if task.kind == "multiclass":
        return outputs.float().softmax(dim=-1)
    if task.kind == "multilabel":
        return outputs.float().sigmoid()
    return outputs.float()


class TaskHeads(nn.Module):
    """One head per task on a shared representation; tanh on regression tasks.

    Args:
        in_dim: size of the shared representation.
        tasks: tasks to predict.
        hidden: width of the hidden layer; 0 makes each head a single linear layer.
        dropout: dropout before the last layer (MLP heads only).
    """

    def __init__(self, in_dim: int, tasks: Sequence[Task], hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.heads = nn.ModuleDict()
        for task in self.tasks:
            if hidden:
                head = nn.Sequential(
                    nn.Linear(in_dim, hidden),
                    nn.GELU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, task.num_outputs),
                )
            else:
                head = nn.Linear(in_dim, task.num_outputs)
            self.heads[task.name] = head

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """h: [..., in_dim] -> {task: [..., num_outputs]}."""
        out = {}
        for task in self.tasks:
            y = self.heads[task.name](h)
            out[task.name] = torch.tanh(y) if task.kind == "regression" else y
        return out


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """[length, dim] fixed sine-cosine positions (Vaswani et al.); any window length works."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return pe


class TemporalModel(nn.Module, ABC):
    """Shared part of every entry: feature standardisation, input projection, masking, task heads.

    Subclasses implement `encode(h [B, T, hidden], pad_mask) -> [B, T, hidden]`.
    """

    def __init__(self, in_dim: int, tasks: Sequence[Task], hidden: int, dropout: float) -> None:
        super().__init__()
        self.tasks = list(tasks)
        # Standardisation statistics of the training features; saved with the weights (buffers).
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.input_proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.Dropout(dropout))
        self.heads = TaskHeads(hidden, tasks, hidden=hidden, dropout=dropout)

    def set_normalization(self, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray) -> None:
        """Store per-feature mean and std [D] (std is floored to avoid dividing by ~0)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1.0e-6))

    @abstractmethod
    def encode(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """h: [B, T, hidden] projected features -> [B, T, hidden] with temporal context."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x: [B, T, D] raw features; pad_mask: [B, T] True on padding -> {task: [B, T, num_outputs]}."""
        x = (x - self.feature_mean) / self.feature_std
        h = self.input_proj(x)
        if pad_mask is not None:
            h = h.masked_fill(pad_mask[..., None], 0.0)
        return self.heads(self.encode(h, pad_mask))


class TemporalBlock(nn.Module):
    """Residual block of two dilated, non-causal 1D convolutions (length-preserving, odd kernel)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for a centred convolution, got {kernel_size}")
        padding = (kernel_size - 1) // 2 * dilation
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, padding=padding, dilation=dilation)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size, padding=padding, dilation=dilation)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, T, C] (zeros on padding) -> [B, T, C] (zeros on padding)."""
        # Padding is zeroed before every convolution, so a padded window sees exactly the zero padding an
        # unpadded one sees at its end: nothing leaks from padding into real frames.
        keep = None if pad_mask is None else (~pad_mask)[:, None, :].to(x.dtype)  # [B, 1, T]
        y = self.drop(self.act(self.conv1(x.transpose(1, 2))))  # Conv1d wants [B, C, T]
        if keep is not None:
            y = y * keep
        y = self.drop(self.act(self.conv2(y)))
        x = self.norm(x + y.transpose(1, 2))
        return x if pad_mask is None else x.masked_fill(pad_mask[..., None], 0.0)


class TCNTransformer(TemporalModel):
    """Seed 003's temporal model: TCN then Transformer encoder then per-task MLP heads.

    Args:
        in_dim: feature size D.
        tasks: tasks to predict.
        hidden: model width.
        tcn_levels: residual conv blocks, dilation 2**level (0 = no TCN).
        kernel_size: odd temporal kernel size of the TCN.
        transformer_layers: Transformer encoder layers (0 = no Transformer).
        heads: attention heads.
        dropout: dropout everywhere (0.3 in seed 003).
    """

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        *,
        hidden: int = 256,
        tcn_levels: int = 3,
        kernel_size: int = 3,
        transformer_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(in_dim, tasks, hidden, dropout)
        self.tcn = nn.ModuleList(
            [TemporalBlock(hidden, kernel_size, 2**level, dropout) for level in range(tcn_levels)]
        )
        self.transformer = None
        if transformer_layers:
            layer = nn.TransformerEncoderLayer(
                hidden,
                heads,
                dim_feedforward=2 * hidden,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,  # pre-norm trains stably without a long warm-up
            )
            self.transformer = nn.TransformerEncoder(
                layer, transformer_layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False
            )

    def encode(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.tcn:
            h = block(h, pad_mask)
        if self.transformer is not None:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device).to(h.dtype)
            h = self.transformer(h, src_key_padding_mask=pad_mask)
        return h


class FrameMLP(TemporalModel):
    """Per-frame MLP without temporal context (ablation). TCN/Transformer kwargs are accepted and ignored
    so that one `model_kwargs` serves every registry entry."""

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[Task],
        *,
        hidden: int = 256,
        dropout: float = 0.3,
        tcn_levels: int = 0,
        kernel_size: int = 3,
        transformer_layers: int = 0,
        heads: int = 4,
    ) -> None:
        super().__init__(in_dim, tasks, hidden, dropout)
        self.body = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))

    def encode(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        return self.body(h)


TEMPORAL_MODELS: dict[str, Callable[..., TemporalModel]] = {}


def register_temporal_model(fn: Callable[..., TemporalModel]) -> Callable[..., TemporalModel]:
    """Register a builder `fn(in_dim, tasks, **kwargs) -> TemporalModel` under its function name."""
    if fn.__name__ in TEMPORAL_MODELS:
        raise ValueError(f"temporal model '{fn.__name__}' is already registered")
    TEMPORAL_MODELS[fn.__name__] = fn
    return fn


@register_temporal_model
def tcn_transformer(in_dim: int, tasks: Sequence[Task], **kwargs) -> TemporalModel:
    return TCNTransformer(in_dim, tasks, **kwargs)


@register_temporal_model
def tcn(in_dim: int, tasks: Sequence[Task], **kwargs) -> TemporalModel:
    return TCNTransformer(in_dim, tasks, **{**kwargs, "transformer_layers": 0})


@register_temporal_model
def transformer(in_dim: int, tasks: Sequence[Task], **kwargs) -> TemporalModel:
    return TCNTransformer(in_dim, tasks, **{**kwargs, "tcn_levels": 0})


@register_temporal_model
def mlp(in_dim: int, tasks: Sequence[Task], **kwargs) -> TemporalModel:
    return FrameMLP(in_dim, tasks, **kwargs)


def create_temporal_model(name: str, in_dim: int, tasks: Sequence[Task], **kwargs) -> TemporalModel:
    """Build a registered temporal model (random weights, identity standardisation).

    Args:
        name: registry key (see `TEMPORAL_MODELS`).
        in_dim: feature size D.
        tasks: tasks to predict, in output order.
        **kwargs: hidden, tcn_levels, kernel_size, transformer_layers, heads, dropout.
    """
    if name not in TEMPORAL_MODELS:
        raise KeyError(f"unknown temporal model '{name}' (known: {', '.join(TEMPORAL_MODELS)})")
    return TEMPORAL_MODELS[name](in_dim, tasks, **kwargs)


def windows(n_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Half-open [start, end) windows of `window` frames every `stride` frames covering every frame.

    The last window is aligned to the end of the sequence (so it may overlap its neighbour more than the
    others); a sequence shorter than `window` gives one window over the whole sequence.
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride <= window, got window={window}, stride={stride}")
    if n_frames <= 0:
        return []
    if n_frames <= window:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return [(start, start + window) for start in starts]


@torch.no_grad()
def predict_sequence(
    model: nn.Module,
    features: np.ndarray | torch.Tensor,
    window: int,
    stride: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Per-frame predictions for one sequence, averaging the windows that overlap each frame.

    Standardisation happens inside the model (its stored training statistics). The model is put in eval
    mode for the call and restored afterwards.

    Args:
        model: a temporal model with the registry API and a `tasks` attribute.
        features: [T, D] raw features of one sequence.
        window: window length (as in training).
        stride: window step; overlapping outputs are averaged.
        device: where to run.
        batch_size: windows per forward pass.

    Returns:
        {task: [T, num_outputs] float32}: class probabilities (multiclass), per-output probabilities
        (multilabel) or values (regression).
    """
    feats = torch.as_tensor(np.asarray(features, dtype=np.float32))
    n_frames = feats.shape[0]
    spans = windows(n_frames, window, stride)
    sums = {task.name: torch.zeros(n_frames, task.num_outputs) for task in model.tasks}
    counts = torch.zeros(n_frames, 1)
    was_training = model.training
    model.eval()
    for i in range(0, len(spans), batch_size):
        chunk = spans[i : i + batch_size]
        # All windows have the same length (window, or n_frames when shorter), so no padding is needed.
        x = torch.stack([feats[start:end] for start, end in chunk]).to(device)
        outputs = model(x, None)
        for task in model.tasks:
            probs = task_probabilities(task, outputs[task.name]).cpu()
            for j, (start, end) in enumerate(chunk):
                sums[task.name][start:end] += probs[j]
        for start, end in chunk:
            counts[start:end] += 1
    model.train(was_training)
    return {name: (total / counts).numpy() for name, total in sums.items()}
