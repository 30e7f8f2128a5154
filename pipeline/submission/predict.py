"""Test-time prediction with the fold ensemble (seeds 002, 004): every cross-validation run's sequence
models (all seeds) predict each test track, their probabilities / values are averaged, then smoothed and
decided with the settings the runs chose on their tuning folds:

- smoothing per task: the spec chosen most often over the runs and seeds (ties: the plainer, listed first
  in `smooth.candidates`);
- decision knobs (AU thresholds): the mean over the runs and seeds of their tuned values.

Nothing here looks at a test label: the knobs come from the runs' tune folds.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline import artifacts
from pipeline.config import Config
from pipeline.evaluation.smoothing import fill_faceless, smooth
from pipeline.features.sequences import TrackSequence
from pipeline.features.sources import SequenceSources
from pipeline.inference.sequences import predict_sequence
from pipeline.models.encoders import load_checkpoint
from pipeline.models.sequence import model_from_checkpoint
from pipeline.tasks.definitions import Task, add_predicted
from pipeline.tasks.kinds import behaviour


def ensemble_outputs(
    runs: dict[str, list[TrackSequence]],
    models_dir: Path,
    seeds: tuple[int, ...],
    tasks: list[Task],
    window: int,
    stride: int,
    device: str = "cpu",
) -> dict[str, dict[str, np.ndarray]]:
    """Average every run's and seed's outputs per track.

    Args:
        runs: run -> the test tracks' sequences built from that run's inputs (its encoder's features).
        models_dir: models/temporal (holds <run>/seed_<s>/model.pt).
        tasks: the tasks to output (CE computed from the basic emotions per model, then averaged).

    Returns:
        track -> task -> [T, C] mean probabilities or values over runs x seeds.
    """
    sums: dict[str, dict[str, np.ndarray]] = {}
    count = 0
    for run, sequences in runs.items():
        for seed in seeds:
            checkpoint = load_checkpoint(artifacts.sequence_model(models_dir / run, seed))
            model = model_from_checkpoint(checkpoint, device)
            for sequence in sequences:
                with torch.no_grad():
                    outputs = predict_sequence(model, sequence, window, stride, device)
                outputs = add_predicted(outputs, tasks)
                track = sums.setdefault(sequence.track, {})
                for task in tasks:
                    track[task.name] = track.get(task.name, 0.0) + outputs[task.name]
            count += 1
    return {track: {name: values / count for name, values in parts.items()} for track, parts in sums.items()}


def chosen_settings(
    smoothed_dir: Path, decisions_dir: Path, runs: list[str], tasks: list[Task], config: Config
) -> tuple[dict[str, str], dict[str, dict]]:
    """Smoothing spec per task (most chosen over runs x seeds) and decision knobs (mean thresholds)."""
    votes: dict[str, Counter] = {task.name: Counter() for task in tasks}
    thresholds: dict[str, list[list[float]]] = {}
    for run in runs:
        for choice in json.loads(artifacts.smoothing_choice(smoothed_dir, run).read_text()).values():
            for name, entry in choice.items():
                if name in votes:
                    votes[name][entry["chosen"]] += 1
        for seed_entry in json.loads(artifacts.decisions(decisions_dir, run).read_text()).values():
            for name, knobs in seed_entry["decisions"].items():
                if "thresholds" in knobs:
                    thresholds.setdefault(name, []).append(knobs["thresholds"])
    smoothing = {}
    for task in tasks:
        order = [str(spec) for spec in config.smooth.specs(task.name)] if task.level == "frame" else []
        counted = votes[task.name]
        smoothing[task.name] = (
            max(order, key=lambda spec: (counted[spec], -order.index(spec))) if counted else "none"
        )
    knobs = {
        name: {"thresholds": np.mean(values, axis=0).round(4).tolist()} for name, values in thresholds.items()
    }
    return smoothing, knobs


def finish_outputs(
    task: Task, values: np.ndarray, sources: np.ndarray, spec: str, knobs: dict, fill: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Post-process one track's outputs of one task the way the runs chose on their tuning folds.

    Args:
        values: [T, C] ensemble probabilities / values.
        sources: [T] "face" / "filled" / "prior" (`TrackSequence.sources`).
        spec: smoothing spec; knobs: decision knobs (AU thresholds); fill: fill faceless frames first.

    Returns:
        (final [T, C] probabilities / values, decided [T] or [T, C]); a video-level task gives ([1, C],
        [1, ...]) from its first row (every row holds the same value).
    """
    if task.level == "video":
        return values[:1], behaviour(task).decide(values[:1], knobs)
    if fill:
        values = fill_faceless(values, sources)
    values = smooth(values, spec)
    return values, behaviour(task).decide(values, knobs)


def decide_tracks(
    outputs: dict[str, dict[str, np.ndarray]],
    sources: dict[str, np.ndarray],
    tasks: list[Task],
    smoothing: dict[str, str],
    knobs: dict[str, dict],
    fill: bool,
) -> dict[str, pl.DataFrame]:
    """Per task, the decided rows of every track: (track, frame, `<task>_pred`), one per frame (one per
    track for a video-level task)."""
    tables = {}
    for task in tasks:
        parts = []
        for track, per_task in outputs.items():
            spec = smoothing.get(task.name, "none")
            _, decided = finish_outputs(
                task, per_task[task.name], sources[track], spec, knobs.get(task.name, {}), fill
            )
            if task.level == "video":
                parts.append(pl.DataFrame({"track": [track], f"{task.name}_pred": [decided[0].tolist()]}))
                continue
            parts.append(
                pl.DataFrame(
                    {
                        "track": [track] * len(decided),
                        "frame": np.arange(len(decided), dtype=np.int64),
                        f"{task.name}_pred": decided.tolist(),
                    }
                )
            )
        tables[task.name] = pl.concat(parts)
    return tables


def sequences_for_runs(
    runs: list[str], tracks: list[str], frames_dir: Path, features_root: Path, extra: dict, config: Config
) -> dict[str, list[TrackSequence]]:
    """run -> the test tracks as that run's models see them (its own encoder's features)."""
    out = {}
    for run in runs:
        sources = SequenceSources(frames_dir, features_root / run, **extra)
        out[run] = sources.load(  # no tasks: test-time inputs need no labels
            tracks, config.train.views, config.train.modalities, [], config.train.track_features
        )
    return out
