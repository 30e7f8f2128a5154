"""Sequence models: a registry with one API over named inputs, as timm does for images.

Inputs are named: per-frame streams `[B, T, D_i]` (feature views, later audio frames) and per-clip vectors
`[B, D_j]` (a text or audio embedding of the clip), declared by `InputSpec`s. Every model

- standardises each input with training statistics stored in its buffers (so a checkpoint is all that
  inference needs),
- projects each input to the model width and sums them (per-clip vectors are broadcast over time); a
  frame stream with a mask (`masks[name]`, [B, T] True where present, e.g. a face was found) gets a learnt
  "missing" vector where absent,
- `forward_features(inputs, pad_mask, masks) -> [B, T, hidden]` adds temporal context,
- `forward_head(h, pad_mask) -> {task: [B, T, C] (frame tasks) or [B, C] (video tasks)}`: logits for
  classification, tanh values for regression.

`pad_mask` [B, T] is True on padding (PyTorch's key-padding convention).

Entries:
- `tcn_transformer` (seed 003): TCN (dilated residual convolutions, non-causal) -> Transformer encoder with
  sinusoidal positions -> per-task MLP heads; `tcn` and `transformer` are its ablations;
- `mlp`: per-frame MLP, no temporal context (the baseline temporal context has to beat).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from pipeline.models.heads import TaskHeads
from pipeline.tasks.definitions import Task, get_task


@dataclass(frozen=True)
class InputSpec:
    """One named model input: `per="frame"` for a [B, T, dim] stream, `per="clip"` for a [B, dim] vector."""

    name: str
    dim: int
    per: str = "frame"

    def __post_init__(self) -> None:
        if self.per not in ("frame", "clip"):
            raise ValueError(f"input '{self.name}': per must be 'frame' or 'clip', got '{self.per}'")


class InputEmbedding(nn.Module):
    """Standardise, project and sum the named inputs into one [B, T, hidden] sequence."""

    def __init__(self, inputs: Sequence[InputSpec], hidden: int, dropout: float) -> None:
        super().__init__()
        if not any(spec.per == "frame" for spec in inputs):
            raise ValueError("a sequence model needs at least one per-frame input stream")
        self.specs = list(inputs)
        self.proj = nn.ModuleDict({spec.name: nn.Linear(spec.dim, hidden) for spec in self.specs})
        self.missing = nn.ParameterDict(
            {spec.name: nn.Parameter(torch.zeros(hidden)) for spec in self.specs if spec.per == "frame"}
        )
        for spec in self.specs:
            # Standardisation statistics of the training inputs; saved with the weights (buffers).
            self.register_buffer(f"{spec.name}_mean", torch.zeros(spec.dim))
            self.register_buffer(f"{spec.name}_std", torch.ones(spec.dim))
        self.drop = nn.Dropout(dropout)

    def set_normalization(
        self, name: str, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray
    ) -> None:
        """Store per-feature mean and std [D] of input `name` (std floored to avoid dividing by ~0)."""
        getattr(self, f"{name}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
        getattr(self, f"{name}_std").copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1.0e-6))

    def standardize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        missing_inputs = [spec.name for spec in self.specs if spec.name not in inputs]
        if missing_inputs:
            raise KeyError(f"model inputs {missing_inputs} are missing (got {sorted(inputs)})")
        h = None
        for spec in self.specs:
            x = self.proj[spec.name](self.standardize(spec.name, inputs[spec.name].float()))
            if spec.per == "clip":
                x = x[:, None, :]  # broadcast over time
            elif masks is not None and spec.name in masks:
                x = torch.where(masks[spec.name][..., None], x, self.missing[spec.name].to(x.dtype))
            h = x if h is None else h + x
        frames = next(inputs[s.name] for s in self.specs if s.per == "frame")
        h = self.drop(h.expand(frames.shape[0], frames.shape[1], -1))
        if pad_mask is not None:
            h = h.masked_fill(pad_mask[..., None], 0.0)
        return h


class SequenceModel(nn.Module, ABC):
    """Shared part of every entry: named-input embedding, task heads; subclasses implement `encode`."""

    def __init__(
        self, inputs: Sequence[InputSpec], tasks: Sequence[Task], hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.inputs = list(inputs)
        self.tasks = list(tasks)
        self.embed = InputEmbedding(inputs, hidden, dropout)
        self.heads = TaskHeads(hidden, tasks, hidden=hidden, dropout=dropout)

    def set_normalization(self, name: str, mean, std) -> None:
        self.embed.set_normalization(name, mean, std)

    @abstractmethod
    def encode(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """h: [B, T, hidden] embedded inputs -> [B, T, hidden] with temporal context."""

    def forward_features(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Named inputs -> [B, T, hidden]."""
        return self.encode(self.embed(inputs, pad_mask, masks), pad_mask)

    def forward_head(self, h: torch.Tensor, pad_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """[B, T, hidden] -> {task: [B, T, C] or [B, C]}."""
        return self.heads(h, pad_mask)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(inputs, pad_mask, masks), pad_mask)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """[length, dim] fixed sine-cosine positions (Vaswani et al.); any window length works."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return pe


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


class TCNTransformer(SequenceModel):
    """Seed 003's temporal model: TCN then Transformer encoder then per-task MLP heads.

    Args:
        inputs: named inputs (`InputSpec`).
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
        inputs: Sequence[InputSpec],
        tasks: Sequence[Task],
        *,
        hidden: int = 256,
        tcn_levels: int = 3,
        kernel_size: int = 3,
        transformer_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(inputs, tasks, hidden, dropout)
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


class FrameMLP(SequenceModel):
    """Per-frame MLP without temporal context (ablation). TCN/Transformer kwargs are accepted and ignored
    so that one `model_kwargs` serves every registry entry."""

    def __init__(
        self,
        inputs: Sequence[InputSpec],
        tasks: Sequence[Task],
        *,
        hidden: int = 256,
        dropout: float = 0.3,
        tcn_levels: int = 0,
        kernel_size: int = 3,
        transformer_layers: int = 0,
        heads: int = 4,
    ) -> None:
        super().__init__(inputs, tasks, hidden, dropout)
        self.body = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))

    def encode(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        return self.body(h)


SEQUENCE_MODELS: dict[str, Callable[..., SequenceModel]] = {}


def register_sequence_model(fn: Callable[..., SequenceModel]) -> Callable[..., SequenceModel]:
    """Register a builder `fn(inputs, tasks, **kwargs) -> SequenceModel` under its function name."""
    if fn.__name__ in SEQUENCE_MODELS:
        raise ValueError(f"sequence model '{fn.__name__}' is already registered")
    SEQUENCE_MODELS[fn.__name__] = fn
    return fn


@register_sequence_model
def tcn_transformer(inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs) -> SequenceModel:
    return TCNTransformer(inputs, tasks, **kwargs)


@register_sequence_model
def tcn(inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs) -> SequenceModel:
    return TCNTransformer(inputs, tasks, **{**kwargs, "transformer_layers": 0})


@register_sequence_model
def transformer(inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs) -> SequenceModel:
    return TCNTransformer(inputs, tasks, **{**kwargs, "tcn_levels": 0})


@register_sequence_model
def mlp(inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs) -> SequenceModel:
    return FrameMLP(inputs, tasks, **kwargs)


def create_sequence_model(
    name: str, inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs
) -> SequenceModel:
    """Build a registered sequence model (random weights, identity standardisation).

    Args:
        name: registry key (see `SEQUENCE_MODELS`).
        inputs: named inputs (`InputSpec`).
        tasks: tasks to predict, in output order.
        **kwargs: hidden, tcn_levels, kernel_size, transformer_layers, heads, dropout.
    """
    if name not in SEQUENCE_MODELS:
        raise KeyError(f"unknown sequence model '{name}' (known: {', '.join(SEQUENCE_MODELS)})")
    return SEQUENCE_MODELS[name](inputs, tasks, **kwargs)


def model_checkpoint(model: SequenceModel, name: str, kwargs: dict, config: dict) -> dict:
    """A checkpoint that rebuilds the model alone: weights (with standardisation), inputs, tasks, config."""
    return {
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "sequence_model": name,
        "inputs": [asdict(spec) for spec in model.inputs],
        "tasks": [task.name for task in model.tasks],
        "model_kwargs": dict(kwargs),
        "config": config,
    }


def model_from_checkpoint(checkpoint: dict, device: str | torch.device = "cpu") -> SequenceModel:
    """Rebuild a sequence model from `model_checkpoint`, in eval mode."""
    inputs = [InputSpec(**spec) for spec in checkpoint["inputs"]]
    tasks = [get_task(name) for name in checkpoint["tasks"]]
    model = create_sequence_model(checkpoint["sequence_model"], inputs, tasks, **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.to(device).eval()
