"""Sequence models: a registry with one API over named inputs, as timm does for images.

Inputs are named: per-frame streams `[B, T, D_i]` (feature views, later audio frames) and per-clip vectors
`[B, D_j]` (a text or audio embedding of the clip), declared by `InputSpec`s. Every model

- standardises each input with training statistics stored in its buffers (so a checkpoint is all that
  inference needs),
- projects each input to the model width; a frame stream with a mask (`masks[name]`, [B, T] True where
  present, e.g. a face was found) gets a learnt "missing" vector where absent; the per-frame visual views are
  combined by a fusion (`fusion`: `sum`, the default, or one of seed 000's attention fusions, see
  `pipeline.models.fusion`), then the other inputs (audio frame streams, per-clip vectors broadcast over
  time) are added,
- `forward_features(inputs, pad_mask, masks) -> [B, T, hidden]` adds temporal context,
- `forward_head(h, pad_mask) -> {task: [B, T, C] (frame tasks) or [B, C] (video tasks)}`: logits for
  classification, tanh values for regression.

`pad_mask` [B, T] is True on padding (PyTorch's key-padding convention).

Entries:
- `tcn_transformer` (seed 003): TCN (dilated residual convolutions, non-causal) -> Transformer encoder with
  sinusoidal positions -> per-task MLP heads; `tcn` and `transformer` are its ablations;
- `mlp`: per-frame MLP, no temporal context (the baseline temporal context has to beat);
- `multimodal_transformer` (seed 004): frame tokens plus one token per clip-level input (audio, text) through
  a Transformer encoder.

Every entry takes the same keyword arguments (`hidden`, `tcn_levels`, `kernel_size`, `transformer_layers`,
`heads`, `dropout`, `fusion`, `fusion_skip`, `fusion_heads`), ignoring those it has no use for, so one
`model_kwargs` serves them all. Per-frame fusion of the views is `mlp` with an attention fusion; fusion
inside the temporal model is `tcn_transformer` with one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from pipeline.models.ensemble import EnsembleModel
from pipeline.models.fusion import SumFusion, create_fusion
from pipeline.models.heads import TaskHeads
from pipeline.tasks.definitions import Task, get_task

MODALITIES = ("visual", "audio", "text")


@dataclass(frozen=True)
class InputSpec:
    """One named model input: `per="frame"` for a [B, T, dim] stream, `per="clip"` for a [B, dim] vector.

    `modality` ("visual", "audio" or "text") says which inputs the view fusion combines: the per-frame
    visual ones. It comes last with a default so checkpoints written before it existed still load.
    """

    name: str
    dim: int
    per: str = "frame"
    modality: str = "visual"

    def __post_init__(self) -> None:
        if self.per not in ("frame", "clip"):
            raise ValueError(f"input '{self.name}': per must be 'frame' or 'clip', got '{self.per}'")
        if self.modality not in MODALITIES:
            raise ValueError(
                f"input '{self.name}': modality must be one of {', '.join(MODALITIES)}, got '{self.modality}'"
            )


class InputEmbedding(nn.Module):
    """Standardise, project, fuse and sum the named inputs into one [B, T, hidden] sequence.

    Args:
        inputs: named inputs.
        hidden: model width.
        dropout: dropout on the embedded sequence (and in an attention fusion).
        fusion: how the per-frame visual views are combined (`pipeline.models.fusion.FUSIONS`); "sum" keeps
            the original behaviour exactly: every input summed in the given order, no extra parameters.
        fusion_skip: the stronger visual view, the attention fusion's skip connection ("" = the first
            per-frame visual input in the given order).
        fusion_heads: attention heads of the fusion.
        clips_as_tokens: leave per-clip vectors out of the sum (a model that reads them as tokens, through
            `clip_tokens`).
    """

    def __init__(
        self,
        inputs: Sequence[InputSpec],
        hidden: int,
        dropout: float,
        fusion: str = "sum",
        fusion_skip: str = "",
        fusion_heads: int = 4,
        clips_as_tokens: bool = False,
    ) -> None:
        super().__init__()
        if not any(spec.per == "frame" for spec in inputs):
            raise ValueError("a sequence model needs at least one per-frame input stream")
        self.specs = list(inputs)
        self.hidden = hidden
        self.clips_as_tokens = clips_as_tokens
        # The views the fusion combines, in input order; everything else is added after it.
        self.visual = [spec.name for spec in self.specs if spec.per == "frame" and spec.modality == "visual"]
        if fusion_skip and fusion_skip not in self.visual:
            known = [spec.name for spec in self.specs]
            kind = "is not a per-frame visual input" if fusion_skip in known else "is not a model input"
            raise ValueError(f"fusion_skip '{fusion_skip}' {kind} (per-frame visual inputs: {self.visual})")
        self.proj = nn.ModuleDict({spec.name: nn.Linear(spec.dim, hidden) for spec in self.specs})
        self.missing = nn.ParameterDict(
            {spec.name: nn.Parameter(torch.zeros(hidden)) for spec in self.specs if spec.per == "frame"}
        )
        for spec in self.specs:
            # Standardisation statistics of the training inputs; saved with the weights (buffers).
            self.register_buffer(f"{spec.name}_mean", torch.zeros(spec.dim))
            self.register_buffer(f"{spec.name}_std", torch.ones(spec.dim))
        self.drop = nn.Dropout(dropout)
        skip_index = self.visual.index(fusion_skip) if fusion_skip else 0
        self.fusion = create_fusion(fusion, hidden, len(self.visual), fusion_heads, dropout, skip_index)

    def set_normalization(
        self, name: str, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray
    ) -> None:
        """Store per-feature mean and std [D] of input `name` (std floored to avoid dividing by ~0)."""
        getattr(self, f"{name}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
        getattr(self, f"{name}_std").copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1.0e-6))

    def standardize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Raw input [..., D] -> standardised and projected [..., hidden]."""
        return self.proj[name](self.standardize(name, x.float()))

    def clip_tokens(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-clip inputs [B, D_j] -> [B, n_clip, hidden] (in input order; n_clip may be 0), with dropout."""
        frames = next(inputs[s.name] for s in self.specs if s.per == "frame")
        tokens = [self.project(spec.name, inputs[spec.name]) for spec in self.specs if spec.per == "clip"]
        if not tokens:
            return frames.new_zeros(frames.shape[0], 0, self.hidden, dtype=torch.float32)
        return self.drop(torch.stack(tokens, dim=1))

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        missing_inputs = [spec.name for spec in self.specs if spec.name not in inputs]
        if missing_inputs:
            raise KeyError(f"model inputs {missing_inputs} are missing (got {sorted(inputs)})")
        projected = {}
        for spec in self.specs:
            if spec.per == "clip" and self.clips_as_tokens:
                continue
            x = self.project(spec.name, inputs[spec.name])
            if spec.per == "clip":
                x = x[:, None, :]  # broadcast over time
            elif masks is not None and spec.name in masks:
                x = torch.where(masks[spec.name][..., None], x, self.missing[spec.name].to(x.dtype))
            projected[spec.name] = x
        if isinstance(self.fusion, SumFusion):
            # The original behaviour, bit for bit: every input summed in the given order.
            h = None
            for x in projected.values():
                h = x if h is None else h + x
        else:
            h = self.fusion(torch.stack([projected[name] for name in self.visual], dim=2), pad_mask)
            for name, x in projected.items():
                if name not in self.visual:
                    h = h + x
        frames = next(inputs[s.name] for s in self.specs if s.per == "frame")
        h = self.drop(h.expand(frames.shape[0], frames.shape[1], -1))
        if pad_mask is not None:
            h = h.masked_fill(pad_mask[..., None], 0.0)
        return h


class SequenceModel(nn.Module, ABC):
    """Shared part of every entry: named-input embedding, task heads; subclasses implement `encode`.

    `fusion`, `fusion_skip`, `fusion_heads`, `clips_as_tokens`: see `InputEmbedding`.
    """

    def __init__(
        self,
        inputs: Sequence[InputSpec],
        tasks: Sequence[Task],
        hidden: int,
        dropout: float,
        fusion: str = "sum",
        fusion_skip: str = "",
        fusion_heads: int = 4,
        clips_as_tokens: bool = False,
    ) -> None:
        super().__init__()
        self.inputs = list(inputs)
        self.tasks = list(tasks)
        self.embed = InputEmbedding(
            inputs, hidden, dropout, fusion, fusion_skip, fusion_heads, clips_as_tokens
        )
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
        fusion: fusion of the per-frame visual views (`pipeline.models.fusion.FUSIONS`; "sum" = plain sum).
        fusion_skip: the stronger visual view, the attention fusion's skip ("" = first visual frame input).
        fusion_heads: attention heads of the fusion (0 = `heads`).
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
        fusion: str = "sum",
        fusion_skip: str = "",
        fusion_heads: int = 0,
    ) -> None:
        super().__init__(inputs, tasks, hidden, dropout, fusion, fusion_skip, fusion_heads or heads)
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
    so that one `model_kwargs` serves every registry entry; `heads` is the fusion's default heads. With an
    attention fusion this is seed 000's per-frame fusion model (fusion block, then an MLP head)."""

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
        fusion: str = "sum",
        fusion_skip: str = "",
        fusion_heads: int = 0,
    ) -> None:
        super().__init__(inputs, tasks, hidden, dropout, fusion, fusion_skip, fusion_heads or heads)
        self.body = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))

    def encode(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        return self.body(h)


class MultimodalTransformer(SequenceModel):
    """Seed 004's transformer-based multimodal fusion over clips of k frames (k = the training window).

    Tokens: the K frames of the clip (visual views fused as in every entry, per-frame audio streams added,
    sinusoidal positions) plus one token per clip-level input (`per="clip"`: an audio or text embedding of
    the clip), each token type with a learnt embedding; a pre-norm Transformer encoder (GELU) over all of
    them; frame tasks read the frame tokens, video tasks pool them over the valid frames (`TaskHeads`).
    The paper concatenates F_I (K x d), F_A (1 x d) and F_T (1 x d) the same way; its encoder has 4 layers,
    dropout 0.3.

    Args:
        inputs: named inputs (`InputSpec`).
        tasks: tasks to predict.
        hidden: model width d.
        transformer_layers: encoder layers (>= 1; 4 in seed 004).
        heads: attention heads.
        dropout: dropout everywhere (0.3 in seed 004).
        fusion, fusion_skip, fusion_heads: as for `TCNTransformer`.
        tcn_levels, kernel_size: accepted and ignored (one `model_kwargs` serves every entry).
    """

    def __init__(
        self,
        inputs: Sequence[InputSpec],
        tasks: Sequence[Task],
        *,
        hidden: int = 256,
        tcn_levels: int = 0,
        kernel_size: int = 3,
        transformer_layers: int = 4,
        heads: int = 4,
        dropout: float = 0.3,
        fusion: str = "sum",
        fusion_skip: str = "",
        fusion_heads: int = 0,
    ) -> None:
        super().__init__(
            inputs, tasks, hidden, dropout, fusion, fusion_skip, fusion_heads or heads, clips_as_tokens=True
        )
        if transformer_layers < 1:
            raise ValueError(
                f"multimodal_transformer needs transformer_layers >= 1, got {transformer_layers}"
            )
        n_clips = sum(spec.per == "clip" for spec in inputs)
        # Row 0: frame tokens; row 1 + j: the j-th clip-level input.
        self.token_type = nn.Parameter(torch.zeros(1 + n_clips, hidden))
        nn.init.trunc_normal_(self.token_type, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=2 * hidden,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, transformer_layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False
        )

    def encode(
        self, h: torch.Tensor, pad_mask: torch.Tensor | None, clips: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h: [B, T, hidden] frame tokens, clips: [B, C, hidden] clip tokens or None -> [B, T, hidden]."""
        b, t, d = h.shape
        h = h + sinusoidal_positions(t, d, h.device).to(h.dtype) + self.token_type[0].to(h.dtype)
        if clips is None:
            clips = h.new_zeros(b, 0, d)
        clips = clips.to(h.dtype) + self.token_type[1 : 1 + clips.shape[1]].to(h.dtype)
        # Clip tokens go after the frames: no positions, and they are never padding.
        if pad_mask is not None:
            pad_mask = torch.cat([pad_mask, pad_mask.new_zeros(b, clips.shape[1])], dim=1)
        return self.transformer(torch.cat([h, clips], dim=1), src_key_padding_mask=pad_mask)[:, :t]

    def forward_features(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Named inputs -> frame tokens [B, T, hidden] after the encoder."""
        h = self.embed(inputs, pad_mask, masks)
        return self.encode(h, pad_mask, self.embed.clip_tokens(inputs))


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


@register_sequence_model
def multimodal_transformer(inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs) -> SequenceModel:
    return MultimodalTransformer(inputs, tasks, **kwargs)


def create_sequence_model(
    name: str, inputs: Sequence[InputSpec], tasks: Sequence[Task], **kwargs
) -> SequenceModel:
    """Build a registered sequence model (random weights, identity standardisation).

    Args:
        name: registry key (see `SEQUENCE_MODELS`).
        inputs: named inputs (`InputSpec`).
        tasks: tasks to predict, in output order.
        **kwargs: hidden, tcn_levels, kernel_size, transformer_layers, heads, dropout, fusion, fusion_skip,
            fusion_heads (see `TCNTransformer`; every entry accepts them all).
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


def ensemble_checkpoint(members: list[dict], config: dict) -> dict:
    """A checkpoint of several `model_checkpoint`s whose outputs are averaged (`EnsembleModel`)."""
    return {"ensemble": members, "config": config}


def model_from_checkpoint(checkpoint: dict, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a sequence model from `model_checkpoint` (or an ensemble from `ensemble_checkpoint`), in
    eval mode."""
    if "ensemble" in checkpoint:
        members = [model_from_checkpoint(member, device) for member in checkpoint["ensemble"]]
        return EnsembleModel(members).to(device).eval()
    inputs = [InputSpec(**spec) for spec in checkpoint["inputs"]]
    tasks = [get_task(name) for name in checkpoint["tasks"]]
    model = create_sequence_model(checkpoint["sequence_model"], inputs, tasks, **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.to(device).eval()
