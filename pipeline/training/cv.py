"""One evaluation run of sequence training: fit on the run's train tracks (one model per seed), predict its
tune and test tracks, and keep everything a later `predict` needs in the model checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import artifacts
from pipeline.config import TrainConfig
from pipeline.evaluation.folds import run_tracks
from pipeline.features.sequences import TrackSequence, check_widths, predictions_table, present_tasks
from pipeline.features.sources import SequenceSources
from pipeline.inference.sequences import predict_sequence
from pipeline.models.encoders import save_checkpoint
from pipeline.models.sequence import ensemble_checkpoint, model_from_checkpoint
from pipeline.runtime import configure_torch, gpu_slots
from pipeline.tasks.definitions import Task, add_predicted, model_tasks
from pipeline.tasks.kinds import behaviour
from pipeline.training.scenes import scene_brightness, scene_subsets
from pipeline.training.sequence import train_sequence_model


def prior_outputs(train: list[TrackSequence], tasks: list[Task], n_frames: int) -> dict[str, np.ndarray]:
    """Outputs for a track that never shows a face: each task's training prior (`TaskKind.prior`: class
    frequencies, AU base rates, mean V/A of the run's training frames) on every frame."""
    out = {}
    for task in tasks:
        targets = np.concatenate([s.targets[task.name] for s in train])
        prior = behaviour(task).prior(targets[task.valid_mask(targets)], task.num_outputs)
        out[task.name] = np.repeat(prior[None], n_frames, axis=0)
    return out


def check_outputs(outputs: dict[str, np.ndarray], track: str, where: str) -> None:
    """Predictions must be finite; names the track, task and first bad frame."""
    for task, values in outputs.items():
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{where}: {task} predictions of track {track} are not finite at frame "
                f"{int(np.flatnonzero(bad)[0])} ({int(bad.sum())} frames); check its features"
            )


@dataclasses.dataclass
class RunData:
    """A run's sequences by role (train / tune / test), its training subsets and its tasks."""

    run: str
    config: TrainConfig  # with `tasks` the heads trained
    data: dict[str, list]
    subsets: list[list]
    tasks: list
    wanted: list
    table_tasks: list


def load_run(
    run: str,
    features_dir: Path,
    frames_dir: Path,
    splits_dir: Path,
    config: TrainConfig,
    geometry_dir: Path | None = None,
    audio_dir: Path | None = None,
    text_dir: Path | None = None,
) -> RunData:
    """Everything `train_seed` needs, read from the stage's inputs."""
    tracks = run_tracks(pl.read_parquet(artifacts.roles_table(splits_dir)), run)
    wanted = present_tasks(frames_dir, config.tasks, "train.tasks")
    # Heads are trained for `tasks`; a task computed from another's outputs (CE from the basic emotions)
    # is added to the predictions after each forward pass.
    tasks = model_tasks(wanted)
    table_tasks = list({task.name: task for task in [*tasks, *wanted]}.values())
    config = dataclasses.replace(config, tasks=tuple(task.name for task in tasks))

    sources = SequenceSources(frames_dir, features_dir, geometry_dir, audio_dir, text_dir)
    data = {
        role: sources.load(names, config.views, config.modalities, tasks, config.track_features)
        for role, names in tracks.items()
    }
    paths = {  # named in width errors
        track: next(iter(sources.view_tables(track, config.views).values()))
        for names in tracks.values()
        for track in names
    }
    check_widths([s for sequences in data.values() for s in sequences], paths)
    faceless = [s.track for s in data["train"] if s.faceless]
    if faceless:
        print(f"{run}: {len(faceless)} training track(s) never show a face, kept out of training: {faceless}")
        data["train"] = [s for s in data["train"] if not s.faceless]
    for role in ("tune", "test"):
        for name in [s.track for s in data[role] if s.faceless]:
            print(f"{run}: {role} track {name} never shows a face: every frame gets the training prior")
    subsets = [data["train"]]
    if config.scenes:
        by_name = {s.track: s for s in data["train"]}
        names = scene_subsets(scene_brightness(frames_dir, list(by_name)), config.scenes)
        subsets = [[by_name[name] for name in subset] for subset in names]
        sizes = ", ".join(str(len(subset)) for subset in subsets)
        print(f"{run}: scene ensemble of {len(subsets)} subsets ({sizes} training tracks)")
    return RunData(run, config, data, subsets, tasks, wanted, table_tasks)


def train_seed(run: RunData, seed: int, out_dir: Path, device: str) -> pl.DataFrame:
    """Train one seed's model (one per scene subset), write it under `<out_dir>/seed_<s>/`, and return its
    raw predictions on the run's tune and test tracks."""
    config, data, tasks = run.config, run.data, run.tasks
    members = [train_sequence_model(subset, config, seed=seed, device=device) for subset in run.subsets]
    if len(members) == 1:
        checkpoint, history = members[0]
    else:  # the subset models vote: one checkpoint holding every member
        checkpoint = ensemble_checkpoint([m[0] for m in members], {"scenes": config.scenes, "seed": seed})
        history = [entry | {"scene": j} for j, (_, h) in enumerate(members) for entry in h]
    model_path = artifacts.sequence_model(out_dir, seed)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, model_path)
    artifacts.sequence_history(out_dir, seed).write_text(json.dumps(history, indent=1) + "\n")
    model = model_from_checkpoint(checkpoint, device)
    tables = []
    for role in ("tune", "test"):
        for sequence in data[role]:
            if sequence.faceless:
                outputs = prior_outputs(data["train"], tasks, sequence.n_frames)
            else:
                outputs = predict_sequence(model, sequence, config.window, config.stride, device)
            outputs = add_predicted(outputs, run.wanted)
            check_outputs(outputs, sequence.track, f"{run.run} seed {seed}")
            table = predictions_table(sequence.track, outputs, run.table_tasks, sequence.sources())
            tables.append(table.with_columns(pl.lit(seed).alias("seed"), pl.lit(role).alias("role")))
    loss, n_tracks = history[-1]["loss"], len(data["train"])
    print(f"{run.run} seed {seed}: final training loss {loss:.4f} on {n_tracks} tracks")
    return pl.concat(tables)


def train_seed_job(seed: int, out_dir: Path, inputs: dict[str, Any]) -> pl.DataFrame:
    """`train_seed` as a fan-out job in a process of its own, pinned to one GPU: reads the run's inputs
    itself (`inputs`: `load_run`'s arguments), so only paths and params travel to it."""
    return train_seed(load_run(**inputs), seed, out_dir, configure_torch())


def train_run(
    run: str,
    features_dir: Path,
    frames_dir: Path,
    splits_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    device: str = "cpu",
    geometry_dir: Path | None = None,
    audio_dir: Path | None = None,
    text_dir: Path | None = None,
) -> pl.DataFrame:
    """Train the run's sequence models and write their predictions on the tune and test tracks.

    Writes `<out_dir>/seed_<s>/model.pt` and `history.json` per seed, and `<out_dir>/predictions.parquet`
    (seed, role, track, frame, `<task>_<i>` outputs), so smoothing and evaluation never retrain. With more
    than one GPU (`pipeline.runtime.gpu_slots`) the seeds train at the same time, one per GPU, through
    Prefect; otherwise one after another here. Each seed's model is the same either way.
    """
    inputs = {
        "run": run, "features_dir": features_dir, "frames_dir": frames_dir, "splits_dir": splits_dir,
        "config": config, "geometry_dir": geometry_dir, "audio_dir": audio_dir, "text_dir": text_dir,
    }  # fmt: skip
    seeds = list(config.seeds)
    if len(seeds) > 1 and len(gpu_slots()) > 1:
        from pipeline.flows import fan_out  # Prefect: imported only when it schedules

        jobs = [{"seed": seed, "out_dir": out_dir, "inputs": inputs} for seed in seeds]
        labels = [f"{run}-seed-{seed}" for seed in seeds]
        job = "pipeline.training.cv:train_seed_job"
        tables = fan_out(job, jobs, name=f"train-{run}", labels=labels, gpu=True)
    else:
        data = load_run(**inputs)
        tables = [train_seed(data, seed, out_dir, device) for seed in seeds]
    keys = ("seed", "role", "track", "frame", "source")
    predictions = pl.concat(tables).select(*keys, pl.exclude(*keys))
    predictions.write_parquet(artifacts.raw_predictions(out_dir))
    return predictions
