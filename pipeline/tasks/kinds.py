"""Task kinds: the behaviour every task of one kind shares, looked up by name instead of `if kind == ...`.

A kind owns how targets are stored, the loss, the activation that turns model outputs into what gets
averaged and scored, the decision rule (with the knobs it tunes on validation data, e.g. AU thresholds),
the class weights for imbalanced labels and the trivial baseline. The metric is the task's own (a
registry name in `pipeline.tasks.metrics`), since two tasks of one kind can be scored differently (VA by
CCC, mimicry intensity by Pearson r).

Shapes: N rows (frames, or videos for per-video tasks), C = number of outputs.
- multiclass: targets int64 [N] class index; outputs [N, C] logits; probabilities softmax.
- multilabel: targets int64 [N, C] 0/1; outputs [N, C] logits; probabilities sigmoid.
- regression: targets float32 [N, C]; outputs [N, C] values squashed by tanh into [-1, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.evaluation import metrics
from pipeline.tasks.definitions import Task

CCC_EPS = 1.0e-8  # keeps 1 - CCC finite on constant batches (a single valid row, constant predictions)


def ccc_torch(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Concordance correlation coefficient per column, population statistics. [N, C], [N, C] -> [C]."""
    pred_mean, true_mean = pred.mean(dim=0), true.mean(dim=0)
    pred_var = pred.var(dim=0, unbiased=False)
    true_var = true.var(dim=0, unbiased=False)
    cov = ((pred - pred_mean) * (true - true_mean)).mean(dim=0)
    return 2 * cov / (pred_var + true_var + (pred_mean - true_mean) ** 2 + CCC_EPS)


class TaskKind(ABC):
    """Behaviour shared by every task of one kind (see the module docstring for shapes)."""

    name: str
    target_dtype: type

    def target_shape(self, n_rows: int, num_outputs: int) -> tuple[int, ...]:
        return (n_rows, num_outputs)

    def targets_from(self, values: np.ndarray, num_outputs: int) -> np.ndarray:
        """Label-table columns [N, len(columns)] -> targets in this kind's dtype and shape."""
        values = np.asarray(values)
        if len(self.target_shape(0, num_outputs)) == 1:
            values = values[:, 0]
        return values.astype(self.target_dtype)

    def empty_targets(self, n_rows: int, num_outputs: int, invalid: float) -> np.ndarray:
        """All-invalid targets for n rows (a track without labels for the task)."""
        return np.full(self.target_shape(n_rows, num_outputs), invalid, dtype=self.target_dtype)

    def squash(self, outputs: torch.Tensor) -> torch.Tensor:
        """What the model head emits: raw logits, or values squashed into range (regression)."""
        return outputs

    @abstractmethod
    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        """Head outputs -> probabilities or values (float32), the thing averaged over windows and scored."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Loss on valid rows only: outputs [N, C], targets [N] or [N, C]."""

    def class_weights(self, targets: np.ndarray, num_outputs: int) -> np.ndarray | None:
        """Weights that balance rare outputs, from valid training targets (None: no weighting)."""
        return None

    def tune(self, probabilities: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """Decision knobs chosen on validation rows (valid rows only). Default: nothing to tune."""
        return {}

    @abstractmethod
    def decide(self, probabilities: np.ndarray, knobs: dict[str, Any]) -> np.ndarray:
        """Probabilities / values [N, C] -> challenge predictions (class index, 0/1 per output, values)."""

    @abstractmethod
    def baseline(self, train_targets: np.ndarray, test_targets: np.ndarray, num_outputs: int) -> float:
        """The trivial baseline a model must beat, on valid rows, in the headline metric of the kind."""

    @abstractmethod
    def prior(self, train_targets: np.ndarray, num_outputs: int) -> np.ndarray:
        """[C] float32 output for a track that shows no face at all: what the training labels say without
        looking (class frequencies, AU base rates, mean values); uniform / zero without training labels."""


class Multiclass(TaskKind):
    name = "multiclass"
    target_dtype = np.int64

    def target_shape(self, n_rows: int, num_outputs: int) -> tuple[int, ...]:
        return (n_rows,)

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=-1)

    def loss(self, outputs, targets, weight):
        return F.cross_entropy(outputs.float(), targets.long(), weight=weight)

    def class_weights(self, targets, num_outputs):
        # Inverse class frequency normalised to mean 1 (absent classes get the largest weight).
        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_outputs).astype(np.float64)
        inv = 1.0 / np.maximum(counts, 1.0)
        return (inv / inv.mean()).astype(np.float32)

    def decide(self, probabilities, knobs):
        return np.asarray(probabilities).argmax(axis=1)

    def baseline(self, train_targets, test_targets, num_outputs):
        """Best of: always the training majority class; uniform random class (expected macro F1)."""
        return metrics.expr_baselines(train_targets, test_targets, num_outputs)["best"]

    def prior(self, train_targets, num_outputs):
        counts = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=num_outputs)
        if counts.sum() == 0:
            return np.full(num_outputs, 1.0 / num_outputs, dtype=np.float32)
        return (counts / counts.sum()).astype(np.float32)


class Multilabel(TaskKind):
    name = "multilabel"
    target_dtype = np.int64

    def activation(self, outputs):
        return outputs.float().sigmoid()

    def loss(self, outputs, targets, weight):
        return F.binary_cross_entropy_with_logits(outputs.float(), targets.float(), pos_weight=weight)

    def class_weights(self, targets, num_outputs):
        # pos_weight = negatives / positives per output, clipped to [0.01, 100].
        targets = np.asarray(targets)
        positives = targets.sum(axis=0).astype(np.float64)
        negatives = len(targets) - positives
        return np.clip(negatives / np.maximum(positives, 1.0), 0.01, 100.0).astype(np.float32)

    def tune(self, probabilities, targets):
        """Per-output threshold maximising F1 on the given rows (ties go to the one closest to 0.5)."""
        if len(targets) == 0:
            return {"thresholds": [0.5] * np.asarray(probabilities).shape[1]}
        thresholds = metrics.tune_au_thresholds(probabilities, targets)
        return {"thresholds": [round(float(t), 4) for t in thresholds]}

    def decide(self, probabilities, knobs):
        thresholds = np.asarray(knobs.get("thresholds", 0.5), dtype=np.float64)
        return (np.asarray(probabilities) >= thresholds).astype(np.int64)

    def baseline(self, train_targets, test_targets, num_outputs):
        """Every output always on: per output F1 = 2p / (p + 1), p = prevalence."""
        return metrics.au_all_positive_f1(test_targets)

    def prior(self, train_targets, num_outputs):
        targets = np.asarray(train_targets, dtype=np.float64).reshape(-1, num_outputs)
        return (targets.mean(axis=0) if len(targets) else np.full(num_outputs, 0.5)).astype(np.float32)


class Regression(TaskKind):
    name = "regression"
    target_dtype = np.float32

    def squash(self, outputs):
        return torch.tanh(outputs)

    def activation(self, outputs):
        return outputs.float()

    def loss(self, outputs, targets, weight):
        return (1 - ccc_torch(outputs.float(), targets.float())).mean()

    def decide(self, probabilities, knobs):
        return np.clip(np.asarray(probabilities), -1.0, 1.0)

    def baseline(self, train_targets, test_targets, num_outputs):
        """A constant prediction: CCC and Pearson r are both 0 by construction."""
        return 0.0

    def prior(self, train_targets, num_outputs):
        targets = np.asarray(train_targets, dtype=np.float64).reshape(-1, num_outputs)
        return (targets.mean(axis=0) if len(targets) else np.zeros(num_outputs)).astype(np.float32)


KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (Multiclass(), Multilabel(), Regression())}


def get_kind(name: str) -> TaskKind:
    if name not in KINDS:
        raise KeyError(f"unknown task kind '{name}' (known: {', '.join(KINDS)})")
    return KINDS[name]


def behaviour(task: Task) -> TaskKind:
    """The kind object of a task: `behaviour(task).loss(...)`."""
    return get_kind(task.kind)
