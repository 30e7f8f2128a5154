"""Task heads on a shared representation: one head per task, the output squashed as its kind says."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.tasks.definitions import Task
from pipeline.tasks.kinds import behaviour


class TaskHeads(nn.Module):
    """One head per task; frame-level tasks keep the time axis, video-level tasks are pooled over it.

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

    def forward(self, h: torch.Tensor, pad_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """h: [N, in_dim] (per image) or [B, T, in_dim] (per frame), pad_mask: [B, T] True on padding.

        Returns:
            {task: [N, C] or [B, T, C]} for frame tasks, {task: [B, C]} for video tasks on sequences (the
            masked mean over frames goes through the head).
        """
        out = {}
        for task in self.tasks:
            x = h
            if task.level == "video" and h.ndim == 3:
                keep = torch.ones(h.shape[:2], device=h.device) if pad_mask is None else (~pad_mask).float()
                x = (h * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp_min(1.0)
            out[task.name] = behaviour(task).squash(self.heads[task.name](x))
        return out
