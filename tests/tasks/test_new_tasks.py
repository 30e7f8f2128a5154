"""Tasks are data: a per-video regression task scored by mean Pearson r (mimicry intensity) and a 7-class
compound task train and score through the same code paths as EXPR, AU and VA."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from conftest import labelled_table

from pipeline.evaluation.scoring import score_run
from pipeline.features.sequences import TrackSequence
from pipeline.inference.sequences import predict_sequence
from pipeline.models.sequence import model_from_checkpoint
from pipeline.tasks.definitions import (
    BASIC_EMOTIONS,
    COMPOUND_CLASSES,
    COMPOUND_PAIRS,
    DERIVED_TARGETS,
    PREDICTED_OUTPUTS,
    TASKS,
    add_predicted,
    basic_emotions,
    compound_from_basic,
    get_tasks,
    model_tasks,
)
from pipeline.tasks.kinds import KINDS, behaviour
from pipeline.tasks.scores import METRICS, headline, score
from pipeline.training.losses import task_loss
from pipeline.training.sequence import train_sequence_model


def test_every_task_has_a_registered_kind_and_metric():
    for task in TASKS.values():
        assert task.kind in KINDS and task.metric in METRICS, task.name
        if task.derived_from:  # reads its source tasks' label columns, maps them with DERIVED_TARGETS
            sources = tuple(c for name in task.derived_from for c in TASKS[name].columns)
            assert task.columns == sources and task.name in DERIVED_TARGETS
        else:
            assert len(task.columns) == (1 if task.kind == "multiclass" else task.num_outputs)
    assert TASKS["emi"].level == "video" and headline(TASKS["emi"]) == "r"
    assert TASKS["ce"].num_outputs == 7 and headline(TASKS["ce"]) == "f1"
    for task in TASKS.values():
        if task.predicted_from:
            assert task.name in PREDICTED_OUTPUTS and not TASKS[task.predicted_from].predicted_from


def test_basic_emotion_targets_come_from_expr_or_compound_labels():
    # columns (expr, ce): Anger; Neutral; Other (invalid, no compound label); unlabelled EXPR with
    # Happily_Surprised; both unlabelled.
    values = np.array([[1, -1], [0, -1], [7, -1], [-1, 1], [-1, -1]])
    got = basic_emotions(values)
    anger, happiness, surprise = (BASIC_EMOTIONS.index(n) for n in ("Anger", "Happiness", "Surprise"))
    assert got[0].tolist() == [1.0 if i == anger else 0.0 for i in range(6)]
    assert (got[1] == 0).all() and (got[2] == -1).all() and (got[4] == -1).all()
    assert got[3].tolist() == [1.0 if i in (happiness, surprise) else 0.0 for i in range(6)]


def test_compound_scores_follow_the_pair_of_basic_emotions():
    # For every compound class, probabilities high on exactly its two emotions make it the argmax.
    for k, (a, b) in enumerate(COMPOUND_PAIRS):
        p = np.full((1, 6), 0.1)
        p[0, BASIC_EMOTIONS.index(a)] = p[0, BASIC_EMOTIONS.index(b)] = 0.9
        scores = compound_from_basic(p)
        assert scores.argmax() == k and np.isclose(scores.sum(), 1.0)
    # Surprise alone is not enough to pick a compound class with confidence: the other emotion decides.
    p = np.array([[0.1, 0.1, 0.6, 0.1, 0.1, 0.95]])  # Fear 0.6 with Surprise
    assert COMPOUND_CLASSES[int(compound_from_basic(p).argmax())] == "Fearfully_Surprised"
    # model_tasks trains the source head once; add_predicted computes CE from it.
    assert [t.name for t in model_tasks(get_tasks(["expr", "ce", "basic"]))] == ["expr", "basic"]
    outputs = add_predicted({"basic": p.astype(np.float32)}, get_tasks(["ce"]))
    assert outputs["ce"].shape == (1, 7)


# One fixed map from intensities to clip vectors, shared by every split: a map drawn per split (as this
# file once did) leaves nothing a model could carry from the training tracks to the test tracks.
CLIP_MIXING = np.random.default_rng(123).normal(size=(6, 6))


def toy_tracks(n_tracks: int, seed: int) -> list[TrackSequence]:
    """Tracks whose frames carry the compound class (frame stream) and whose clip vector carries the
    mimicry intensities (one per track, through `CLIP_MIXING`), both under noise."""
    rng = np.random.default_rng(seed)
    tracks = []
    for i in range(n_tracks):
        n = int(rng.integers(40, 70))
        ce = np.repeat(rng.integers(0, 7, size=n // 10 + 1), 10)[:n]
        ce[rng.random(n) < 0.1] = -1  # unlabelled frames
        frames = np.eye(7, dtype=np.float32)[np.maximum(ce, 0)] + 0.3 * rng.normal(size=(n, 7)).astype(
            np.float32
        )
        intensity = rng.random(6).astype(np.float32)
        clip = (intensity @ CLIP_MIXING + 0.1 * rng.normal(size=6)).astype(np.float32)
        targets = {"ce": ce.astype(np.int64), "emi": np.repeat(intensity[None], n, axis=0)}
        tracks.append(
            TrackSequence(f"t{i}", {"face": frames}, {"face": np.ones(n, bool)}, {"text": clip}, targets)
        )
    return tracks


def test_video_level_targets_are_pooled_per_window():
    task = TASKS["emi"]
    outputs = torch.zeros(2, 6, requires_grad=True)
    targets = torch.full((2, 5, 6), 0.5)
    targets[1] = task.invalid  # a window without a label contributes nothing
    loss = task_loss(task, outputs, targets)
    loss.backward()
    assert outputs.grad[1].abs().sum() == 0 and torch.isfinite(loss)


@pytest.mark.slow
def test_compound_and_mimicry_tasks_train_and_score_like_the_others(tiny_train_config):
    tasks = get_tasks(["ce", "emi"])
    config = dataclasses.replace(tiny_train_config, tasks=("ce", "emi"), views=("face",), epochs=25)
    train, tune, test = toy_tracks(40, 0), toy_tracks(10, 1), toy_tracks(12, 2)
    checkpoint, history = train_sequence_model(train, config, seed=0)
    assert history[-1]["loss"] < history[0]["loss"]
    assert checkpoint["config"]["tasks"] == ("ce", "emi") and checkpoint["tasks"] == ["ce", "emi"]
    model = model_from_checkpoint(checkpoint)
    assert [s.per for s in model.inputs] == ["frame", "clip"]

    def table(tracks):
        parts = [
            labelled_table(s, predict_sequence(model, s, config.window, config.stride), tasks) for s in tracks
        ]
        return pl.concat(parts)

    train_targets = {t.name: np.concatenate([s.targets[t.name] for s in train]) for t in tasks}
    train_targets = {k: v[TASKS[k].valid_mask(v)] for k, v in train_targets.items()}
    scores, decisions, _ = score_run(table(test), table(tune), train_targets, tasks)
    # Per-video: one scored row per test track, by mean Pearson r over the 6 intensities.
    assert scores["emi"]["n_rows"] == len(test) and scores["emi"]["baseline"] == 0.0
    assert set(scores["emi"]) >= {f"r_{name}" for name in TASKS["emi"].class_names}
    # Per-frame compound classes: macro F1 over all 7 classes, well above the trivial baseline.
    assert scores["ce"]["f1"] > scores["ce"]["baseline"] + 0.3
    assert decisions["ce"] == {} and decisions["emi"] == {}


def test_pearson_metric_matches_scipy():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    pred, true = rng.random((30, 6)), rng.random((30, 6))
    expected = np.mean([pearsonr(pred[:, j], true[:, j]).statistic for j in range(6)])
    assert score(TASKS["emi"], pred, true)["r"] == pytest.approx(expected, abs=1e-12)
    true[:, 0] = 0.5  # a constant column: r undefined in scipy, 0 here (no linear information)
    assert score(TASKS["emi"], pred, true)["r_Admiration"] == 0.0


def test_compound_macro_f1_matches_sklearn_with_all_labels():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 6, 200), rng.integers(0, 7, 200)  # class 6 never true
    expected = f1_score(true, pred, labels=list(range(7)), average="macro", zero_division=0)
    assert score(TASKS["ce"], pred, true)["f1"] == pytest.approx(expected, abs=1e-12)
    assert behaviour(TASKS["ce"]).decide(np.eye(7)[pred], {}).tolist() == pred.tolist()


@pytest.mark.slow
def test_a_per_video_head_learns_intensities_from_a_clip_vector(tiny_train_config):
    tasks = get_tasks(["emi"])
    config = dataclasses.replace(tiny_train_config, tasks=("emi",), views=("face",), epochs=25)
    train, test = toy_tracks(40, 0), toy_tracks(12, 2)
    model = model_from_checkpoint(train_sequence_model(train, config, seed=0)[0])
    table = pl.concat(
        [labelled_table(s, predict_sequence(model, s, config.window, config.stride), tasks) for s in test]
    )
    rows = table.unique("track", keep="first")
    outputs = rows.select([f"emi_{i}" for i in range(6)]).to_numpy()
    truth = rows.select(list(TASKS["emi"].columns)).to_numpy()
    assert score(TASKS["emi"], outputs, truth)["r"] > 0.5
