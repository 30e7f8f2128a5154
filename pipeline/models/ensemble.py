"""Several sequence models as one (seed 004's scene ensemble; any ensemble of members with the same inputs
and tasks): the members' probabilities are averaged (a soft majority vote), regression values too.

The ensemble returns what a single model returns, `{task: [B, T, C] or [B, C]}`, in the form each task
kind's activation turns into the averaged probabilities (log of the mean softmax for multiclass, logit of
the mean sigmoid for multilabel, the mean value for regression), so everything downstream (windowed
prediction, smoothing, decisions) treats it as one model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from pipeline.tasks.kinds import behaviour

PROBABILITY_FLOOR = 1.0e-7  # keeps log / logit finite when every member is certain


class EnsembleModel(nn.Module):
    """Members with identical inputs and tasks, averaged.

    Args:
        members: sequence models (`pipeline.models.sequence.SequenceModel`).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for member in members[1:]:
            same_tasks = [t.name for t in member.tasks] == [t.name for t in first.tasks]
            if not same_tasks or member.inputs != first.inputs:
                raise ValueError("ensemble members must share inputs and tasks")
        self.members = nn.ModuleList(members)
        self.tasks = list(first.tasks)
        self.inputs = list(first.inputs)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        outputs = [member(inputs, pad_mask, masks) for member in self.members]
        averaged = {}
        for task in self.tasks:
            mean = torch.stack([behaviour(task).activation(o[task.name]) for o in outputs]).mean(dim=0)
            if task.kind == "multiclass":
                averaged[task.name] = mean.clamp_min(PROBABILITY_FLOOR).log()
            elif task.kind == "multilabel":
                averaged[task.name] = torch.logit(mean.clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))
            else:
                averaged[task.name] = mean
        return averaged
