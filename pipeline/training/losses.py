"""Per-task losses chosen by `Task.kind`, ignoring frames that carry the task's invalid marker.

- multiclass (EXPR): cross-entropy, optional per-class weights (seed 004 weights classes).
- multilabel (AU): binary cross-entropy with logits on rows without any invalid marker, optional pos_weight.
- regression (VA): mean over dimensions of 1 - CCC, with the CCC computed over the valid rows of the batch
  (the seeds' VA loss; batch statistics are the standard reading).

Outputs may carry extra leading dimensions ([B, T, C] from temporal models); they are flattened to rows.
Padding frames are expected to carry the invalid marker in the targets, so they are ignored too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.tasks.definitions import Task

CCC_EPS = 1.0e-8  # keeps 1 - CCC finite on constant batches (a single valid row, constant predictions)


def ccc(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Concordance correlation coefficient per column, population statistics.

    Args:
        pred: [N, C]; true: [N, C].

    Returns:
        [C] CCC values in [-1, 1].
    """
    pred_mean, true_mean = pred.mean(dim=0), true.mean(dim=0)
    pred_var = pred.var(dim=0, unbiased=False)
    true_var = true.var(dim=0, unbiased=False)
    cov = ((pred - pred_mean) * (true - true_mean)).mean(dim=0)
    return 2 * cov / (pred_var + true_var + (pred_mean - true_mean) ** 2 + CCC_EPS)


def valid_rows(task: Task, targets: torch.Tensor) -> torch.Tensor:
    """[N] bool: rows of targets ([N] or [N, C]) that carry a label (torch version of `Task.valid_mask`)."""
    valid = targets != task.invalid
    return valid if valid.ndim == 1 else valid.all(dim=1)


def task_loss(
    task: Task, outputs: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss of one task on the rows that carry a label.

    Args:
        task: the task (its `kind` picks the loss, its `invalid` marks rows to ignore).
        outputs: [..., C] logits (multiclass, multilabel) or values (regression, already squashed by tanh).
        targets: [...] class indices (multiclass) or [..., C] 0/1 or float values; invalid rows hold
            `task.invalid`.
        weight: [C] per-class weights (multiclass) or pos_weight (multilabel); unused for regression.

    Returns:
        A scalar; exactly 0 (still attached to the graph) when no row is valid.
    """
    num_outputs = outputs.shape[-1]
    outputs = outputs.reshape(-1, num_outputs).float()
    targets = targets.reshape(-1) if task.kind == "multiclass" else targets.reshape(-1, num_outputs)
    valid = valid_rows(task, targets)
    if not bool(valid.any()):
        return outputs.sum() * 0.0  # keeps backward() and DDP happy on a batch without labels
    outputs, targets = outputs[valid], targets[valid]
    if task.kind == "multiclass":
        return F.cross_entropy(outputs, targets.long(), weight=weight)
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(outputs, targets.float(), pos_weight=weight)
    if task.kind == "regression":
        return (1 - ccc(outputs, targets.float())).mean()
    raise ValueError(f"task '{task.name}': unknown kind '{task.kind}'")


def multitask_loss(
    tasks: list[Task],
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Unweighted sum of the task losses.

    Args:
        tasks: tasks to score; each needs an entry in outputs and targets.
        outputs: task name -> [..., C].
        targets: task name -> targets as in `task_loss`.
        weights: optional task name -> `weight` argument of `task_loss`.

    Returns:
        total loss (scalar tensor), task name -> loss as a float (for logging).
    """
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
    """Weights that balance rare outputs, from training targets (None for regression).

    multiclass: inverse class frequency normalised to mean 1 (absent classes get the largest weight);
    multilabel: pos_weight = negatives / positives per output (clipped to [0.01, 100]).
    """
    targets = np.asarray(targets)
    labelled = targets[task.valid_mask(targets)]
    if task.kind == "multiclass":
        counts = np.bincount(labelled.astype(np.int64), minlength=task.num_outputs).astype(np.float64)
        inv = 1.0 / np.maximum(counts, 1.0)
        return (inv / inv.mean()).astype(np.float32)
    if task.kind == "multilabel":
        positives = labelled.sum(axis=0).astype(np.float64)
        negatives = len(labelled) - positives
        return np.clip(negatives / np.maximum(positives, 1.0), 0.01, 100.0).astype(np.float32)
    return None
