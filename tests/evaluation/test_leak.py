"""A planted label leak: features that reveal a track's labels exactly where an encoder was allowed to see
them. Through the real split, training, tuning and scoring code, the reported fold must not benefit;
the same plant under a leaky split (the encoder saw every CV track, as it did before runs existed) must
inflate the score, so this test can fail."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from conftest import labelled_table

from pipeline.config import SmoothConfig
from pipeline.evaluation.folds import assign_folds, run_roles, run_tracks
from pipeline.evaluation.report import choose_smoothing
from pipeline.evaluation.scoring import score_run
from pipeline.features.sequences import TrackSequence
from pipeline.inference.sequences import predict_sequence
from pipeline.models.sequence import model_from_checkpoint
from pipeline.tasks.definitions import get_tasks
from pipeline.training.sequence import train_sequence_model

N_TRACKS, N_FOLDS = 20, 4


def random_labels(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Labels with no relation to anything a model could see, except the planted leak."""
    expr = np.repeat(rng.integers(0, 8, size=n // 6 + 1), 6)[:n].astype(np.int64)
    au = (rng.random((n // 6 + 1, 12)) < 0.3).repeat(6, axis=0)[:n].astype(np.int64)
    return {"expr": expr, "au": au}


def planted_features(labels: dict[str, np.ndarray], visible: bool, rng: np.random.Generator) -> np.ndarray:
    """What a label-memorising encoder emits: the labels where it saw them, noise elsewhere."""
    n = len(labels["expr"])
    noise = rng.normal(size=(n, 20)).astype(np.float32)
    if visible:
        noise[:, :8] += 3 * np.eye(8, dtype=np.float32)[labels["expr"]]
        noise[:, 8:20] += 3 * labels["au"]
    return noise


SMOOTHING = SmoothConfig({"expr": ("none", "window:5"), "au": ("none", "gaussian:1.0")})


def run_scores(run: str, roles: pl.DataFrame, labels: dict, seen_by_encoder: set[str], config) -> dict:
    """Train on the run's train tracks, choose smoothing and thresholds on its tune tracks, score its test
    tracks: the same functions the train, smooth and evaluate stages call."""
    tasks = get_tasks(config.tasks)
    rng = np.random.default_rng(1)
    tracks = run_tracks(roles, run)

    def sequence(track: str) -> TrackSequence:
        features = planted_features(labels[track], track in seen_by_encoder, rng)
        n = len(features)
        return TrackSequence(track, {"face": features}, {"face": np.ones(n, bool)}, {}, labels[track])

    data = {role: [sequence(t) for t in names] for role, names in tracks.items()}
    checkpoint, _ = train_sequence_model(data["train"], config, seed=0)
    model = model_from_checkpoint(checkpoint)
    tables = []
    for role in ("tune", "test"):
        for s in data[role]:
            outputs = predict_sequence(model, s, config.window, config.stride)
            tables.append(labelled_table(s, outputs, tasks).with_columns(pl.lit(role).alias("role")))
    smoothed, _ = choose_smoothing(pl.concat(tables), tasks, SMOOTHING)
    train_targets = {t.name: np.concatenate([labels[k][t.name] for k in tracks["train"]]) for t in tasks}
    scores, _, _ = score_run(
        smoothed.filter(pl.col("role") == "test"),
        smoothed.filter(pl.col("role") == "tune"),
        train_targets,
        tasks,
    )
    return scores


@pytest.mark.slow
def test_the_reported_fold_does_not_benefit_from_a_planted_leak(tiny_train_config):
    config = dataclasses.replace(tiny_train_config, tasks=("expr", "au"), views=("face",), epochs=40)
    rng = np.random.default_rng(0)
    names = [f"t{i:02d}" for i in range(N_TRACKS)]
    labels = {t: random_labels(rng, int(rng.integers(40, 60))) for t in names}
    tracks = pl.DataFrame(
        {
            "track": names,
            "video": names,
            "subject": [f"p{i // 2}" for i in range(N_TRACKS)],
            "split": "Train_Set",
            "n_frames": [len(labels[t]["expr"]) for t in names],
        }
    )
    folds = assign_folds(tracks, n_folds=N_FOLDS, seed=0)
    roles = run_roles(folds, "fold_0", n_folds=N_FOLDS, seed=0)

    # Leak-free: the run's encoder saw its training tracks' labels only (what stages/finetune.py uses).
    clean = run_scores("fold_0", roles, labels, set(run_tracks(roles, "fold_0")["train"]), config)
    # Leaky control: an encoder that saw every track's labels, the test fold's included.
    leaky = run_scores("fold_0", roles, labels, set(names), config)

    # 12 independent AUs are learnt more slowly than one 8-way class: a smaller margin proves the plant.
    for task, margin in (("expr", 0.4), ("au", 0.15)):
        assert leaky[task]["f1"] > leaky[task]["baseline"] + margin, f"the plant must be learnable ({task})"
        assert clean[task]["f1"] < clean[task]["baseline"] + 0.1, f"fold_0 benefited from the leak ({task})"
