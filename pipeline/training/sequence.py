"""Recipe: train a sequence model on windows of per-track named inputs (seed 003's temporal stage)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.features.sequences import AUDIO_STREAM, TEXT_CLIP, TrackSequence
from pipeline.inference.sequences import predict_sequence, window_inputs, windows
from pipeline.models.sequence import InputSpec, create_sequence_model, ensemble_checkpoint, model_checkpoint
from pipeline.tasks.definitions import get_tasks
from pipeline.tasks.scores import monitor_scores
from pipeline.training.loop import FitConfig, fit
from pipeline.training.losses import balanced_weights, multitask_loss


def input_specs(sequence: TrackSequence) -> list[InputSpec]:
    """The named inputs a track provides: its frame streams and clip vectors, in a stable order (visual
    streams in the order the track lists them, so the first is the fusion's default skip view)."""
    modality = {AUDIO_STREAM: "audio", TEXT_CLIP: "text"}
    specs = [
        InputSpec(name, values.shape[1], "frame", modality.get(name, "visual"))
        for name, values in sequence.streams.items()
    ]
    return specs + [
        InputSpec(name, values.shape[0], "clip", modality.get(name, "visual"))
        for name, values in sorted(sequence.clips.items())
    ]


def window_targets(
    sequences: list[TrackSequence], items: list[tuple[int, int, int]], tasks
) -> dict[str, torch.Tensor]:
    """Targets of windows as [B, T(, C)], padding set to each task's invalid marker (losses skip it)."""
    length = max(end - start for _, start, end in items)
    out = {}
    for task in tasks:
        first = sequences[items[0][0]].targets[task.name]
        y = np.full((len(items), length, *first.shape[1:]), task.invalid, dtype=first.dtype)
        for row, (seq, start, end) in enumerate(items):
            y[row, : end - start] = sequences[seq].targets[task.name][start:end]
        out[task.name] = torch.from_numpy(y)
    return out


def train_sequence_model(
    train: list[TrackSequence],
    config: TrainConfig,
    *,
    seed: int,
    device: str = "cpu",
    val: list[TrackSequence] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train one sequence model.

    Args:
        train: training tracks (every task of `config.tasks` in their targets; unlabelled = invalid).
        config: the `train` params (model, windows, schedule, noise, class balance).
        seed: seeds init, dropout, feature noise and window order (one of `config.seeds`).
        val: tracks scored after every epoch (watching only: nothing is chosen on them).

    Returns:
        checkpoint (`pipeline.models.sequence.model_checkpoint`, standardisation inside), history.
    """
    if not train:
        raise ValueError("train_sequence_model needs at least one training track")
    tasks = get_tasks(config.tasks)
    for sequence in train:
        absent = [t.name for t in tasks if t.name not in sequence.targets]
        if absent:
            raise KeyError(f"{sequence.track}: no targets for tasks {absent}")

    # Windows without any label teach nothing: skip them.
    items = []
    for index, sequence in enumerate(train):
        labelled = np.zeros(sequence.n_frames, dtype=bool)
        for task in tasks:
            labelled |= task.valid_mask(sequence.targets[task.name])
        items += [
            (index, s, e)
            for s, e in windows(sequence.n_frames, config.window, config.stride)
            if labelled[s:e].any()
        ]
    if not items:
        raise ValueError("no labelled window in the training tracks")

    torch.manual_seed(seed)  # model init
    specs = input_specs(train[0])
    model = create_sequence_model(config.model, specs, tasks, **config.model_kwargs)
    for spec in specs:
        values = np.concatenate(
            [s.streams[spec.name] if spec.per == "frame" else s.clips[spec.name][None] for s in train]
        )
        model.set_normalization(spec.name, values.mean(axis=0), values.std(axis=0))
    model.to(device)
    weights = {}
    if config.class_balance:
        for task in tasks:
            w = balanced_weights(task, np.concatenate([s.targets[task.name] for s in train]))
            if w is not None:
                weights[task.name] = torch.as_tensor(w, device=device)

    def step(batch: np.ndarray):
        chosen = [items[i] for i in batch]
        inputs, pad_mask, masks = window_inputs(train, chosen)
        y = {k: v.to(device) for k, v in window_targets(train, chosen, tasks).items()}
        inputs = {k: v.to(device) for k, v in inputs.items()}
        masks = {k: v.to(device) for k, v in masks.items()}
        pad_mask = pad_mask.to(device)
        if config.feature_noise:
            # Noise in units of each input's training std (augmentation).
            for spec in specs:
                std = getattr(model.embed, f"{spec.name}_std")
                inputs[spec.name] = inputs[spec.name] + config.feature_noise * std * torch.randn(
                    inputs[spec.name].shape, device=device
                )
        return multitask_loss(tasks, model(inputs, pad_mask, masks), y, weights)

    snapshots: list[dict[str, torch.Tensor]] = []  # weights of the last `epoch_ensemble` epochs

    def validate(current) -> dict[str, float]:
        if config.epoch_ensemble > 1:
            snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in current.state_dict().items()})
            del snapshots[: -config.epoch_ensemble]
        if not val:
            return {}
        preds = [predict_sequence(current, s, config.window, config.stride, device) for s in val]
        probabilities = {t.name: np.concatenate([p[t.name] for p in preds]) for t in tasks}
        targets = {t.name: np.concatenate([s.targets[t.name] for s in val]) for t in tasks}
        return {f"val_{k}": v for k, v in monitor_scores(tasks, probabilities, targets).items()}

    fit_config = FitConfig.from_params(config, seed=seed)
    model, history = fit(
        model, step, len(items), fit_config, device=device, on_epoch_end=validate, desc="sequence"
    )
    run_config = asdict(config) | {"seed": seed, "num_tracks": len(train), "num_windows": len(items)}
    checkpoint = model_checkpoint(model, config.model, config.model_kwargs, run_config)
    if len(snapshots) > 1:  # the epoch ensemble: the last epochs' weights, their outputs averaged
        members = [checkpoint | {"model": weights} for weights in snapshots]
        checkpoint = ensemble_checkpoint(members, run_config)
    return checkpoint, history
