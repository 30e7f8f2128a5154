"""Multi-task loss: each task's loss comes from its kind, on the rows that carry a label.

Outputs may carry extra leading dimensions ([B, T, C] from sequence models); they are flattened to rows.
Padding frames carry the invalid marker in the targets, so they are ignored too. Video-level tasks arrive
as [B, C] outputs with [B, T(, C)] targets: the target of a window is that of its first labelled frame.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.tasks.definitions import Task
from pipeline.tasks.kinds import behaviour


def valid_rows(task: Task, targets: torch.Tensor) -> torch.Tensor:
    """[N] bool: rows of targets ([N] or [N, C]) that carry a label."""
    valid = targets != task.invalid
    return valid if valid.ndim == 1 else valid.all(dim=1)


def video_targets(task: Task, targets: torch.Tensor) -> torch.Tensor:
    """Video-level targets [B, T(, C)] -> [B(, C)]: the first labelled frame of each window (all frames of
    a track carry the same video label), or the invalid marker when no frame is labelled."""
    valid = targets != task.invalid
    valid = valid if valid.ndim == 2 else valid.all(dim=2)  # [B, T]
    first = valid.float().argmax(dim=1)  # first labelled frame (0 when none)
    picked = targets[torch.arange(len(targets)), first]
    missing = ~valid.any(dim=1)
    return torch.where(
        missing.view(-1, *([1] * (picked.ndim - 1))), torch.full_like(picked, task.invalid), picked
    )


def task_loss(
    task: Task, outputs: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss of one task on the rows that carry a label; exactly 0 (still in the graph) when none does.

    Args:
        outputs: [..., C] logits (classification) or values (regression, already squashed by tanh).
        targets: [...] class indices or [..., C] values; invalid rows hold `task.invalid`.
        weight: [C] class weights (multiclass) or pos_weight (multilabel).
    """
    if task.level == "video" and targets.ndim > outputs.ndim - (1 if task.kind == "multiclass" else 0):
        targets = video_targets(task, targets)
    num_outputs = outputs.shape[-1]
    outputs = outputs.reshape(-1, num_outputs).float()
    targets = targets.reshape(-1) if task.kind == "multiclass" else targets.reshape(-1, num_outputs)
    valid = valid_rows(task, targets)
    if not bool(valid.any()):
        return outputs.sum() * 0.0  # keeps backward() happy on a batch without labels
    return behaviour(task).loss(outputs[valid], targets[valid], weight)


def multitask_loss(
    tasks: list[Task],
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Unweighted sum of the task losses; returns the total and each task's loss as a float."""
    weights = weights or {}
    total = None
    parts: dict[str, float] = {}
    for task in tasks:
        loss = task_loss(task, outputs[task.name], targets[task.name], weights.get(task.name))
        total = loss if total is None else total + loss
        parts[task.name] = float(loss.detach())
    if total is None:
        raise ValueError("multitask_loss needs at least one task")
    return total, parts


def balanced_weights(task: Task, targets: np.ndarray) -> np.ndarray | None:
    """Class / positive weights for a task from its training targets (None when its kind has none)."""
    targets = np.asarray(targets)
    return behaviour(task).class_weights(targets[task.valid_mask(targets)], task.num_outputs)
