"""Sequence models over whole tracks: windowing and per-frame predictions with overlap averaging."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.features.sequences import TrackSequence
from pipeline.tasks.kinds import behaviour


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


def window_inputs(
    sequences: list[TrackSequence], items: list[tuple[int, int, int]]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Stack windows (sequence index, start, end) into padded model inputs.

    Returns:
        inputs: stream -> [B, T, D] (zeros on padding), clip -> [B, D]; pad_mask [B, T] (True = padding);
        masks: stream -> [B, T] bool (True where the stream is present).
    """
    length = max(end - start for _, start, end in items)
    first = sequences[items[0][0]]
    inputs = {name: torch.zeros(len(items), length, v.shape[1]) for name, v in first.streams.items()}
    inputs |= {name: torch.zeros(len(items), v.shape[0]) for name, v in first.clips.items()}
    masks = {name: torch.zeros(len(items), length, dtype=torch.bool) for name in first.masks}
    pad_mask = torch.ones(len(items), length, dtype=torch.bool)
    for row, (seq, start, end) in enumerate(items):
        sequence, n = sequences[seq], end - start
        for name, values in sequence.streams.items():
            inputs[name][row, :n] = torch.from_numpy(values[start:end])
        for name, values in sequence.clips.items():
            inputs[name][row] = torch.from_numpy(values)
        for name, values in sequence.masks.items():
            masks[name][row, :n] = torch.from_numpy(values[start:end])
        pad_mask[row, :n] = False
    return inputs, pad_mask, masks


@torch.no_grad()
def predict_sequence(
    model: nn.Module,
    sequence: TrackSequence,
    window: int,
    stride: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Per-frame outputs for one track, averaging the windows that overlap each frame.

    Standardisation happens inside the model (its stored training statistics). The model is put in eval
    mode for the call and restored afterwards.

    Returns:
        {task: [T, C] float32}: probabilities (classification) or values (regression); a video-level task's
        output is the mean over windows, repeated on every frame.
    """
    n_frames = sequence.n_frames
    spans = windows(n_frames, window, stride)
    frame_tasks = [task for task in model.tasks if task.level == "frame"]
    sums = {task.name: torch.zeros(n_frames, task.num_outputs) for task in frame_tasks}
    per_window: dict[str, list[torch.Tensor]] = {t.name: [] for t in model.tasks if t.level == "video"}
    counts = torch.zeros(n_frames, 1)
    was_training = model.training
    model.eval()
    for i in range(0, len(spans), batch_size):
        chunk = spans[i : i + batch_size]
        inputs, _, masks = window_inputs([sequence], [(0, s, e) for s, e in chunk])
        inputs = {k: v.to(device) for k, v in inputs.items()}
        masks = {k: v.to(device) for k, v in masks.items()}
        # All windows of one track have the same length, so there is no padding.
        outputs = model(inputs, None, masks)
        for task in model.tasks:
            probs = behaviour(task).activation(outputs[task.name]).cpu()
            if task.level == "video":
                per_window[task.name].append(probs)  # [windows, C]
                continue
            for j, (start, end) in enumerate(chunk):
                sums[task.name][start:end] += probs[j]
        for start, end in chunk:
            counts[start:end] += 1
    model.train(was_training)
    out = {name: (total / counts).numpy() for name, total in sums.items()}
    for name, parts in per_window.items():
        out[name] = torch.cat(parts).mean(dim=0, keepdim=True).expand(n_frames, -1).numpy().copy()
    return out
