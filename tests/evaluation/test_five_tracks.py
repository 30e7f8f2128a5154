"""The CE and EMI tracks and the MTL score, scored through the project's code paths, against scikit-learn
and scipy on edge cases: classes absent from a fold, constant predictions, invalid markers, and a
video-level task with few videos."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from pipeline.evaluation.report import MTL_TASKS, summarise_cv
from pipeline.evaluation.scoring import task_rows
from pipeline.features.sequences import output_columns
from pipeline.tasks.definitions import TASKS, compound_from_basic
from pipeline.tasks.kinds import behaviour
from pipeline.tasks.scores import score

CE, EMI = TASKS["ce"], TASKS["emi"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ce_is_macro_f1_over_all_seven_classes_even_when_absent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.choice([0, 2, 5], size=120)  # four of the seven classes never occur in this fold
    pred = np.where(rng.random(120) < 0.6, true, rng.choice([0, 2, 5, 6], size=120))  # 1, 3, 4 in neither
    got = score(CE, pred, true)["f1"]
    expected = f1_score(true, pred, labels=list(range(7)), average="macro", zero_division=0)
    assert got == pytest.approx(expected, abs=1e-12)
    # sklearn's plain macro average drops the absent classes: a higher, wrong number here.
    assert f1_score(true, pred, average="macro") > got


def test_ce_from_basic_probabilities_skips_invalid_frames_and_scores_constant_predictions() -> None:
    rng = np.random.default_rng(4)
    basic = rng.random((50, 6)).astype(np.float32)
    outputs = compound_from_basic(basic)
    true = rng.integers(0, 7, 50)
    true[::5] = -1  # unlabelled frames (C-EXPR-DB's -1)
    table = pl.DataFrame(
        {"track": ["v"] * 50, "frame": np.arange(50)}
        | {c: outputs[:, i] for i, c in enumerate(output_columns(CE))}
        | {"ce": true}
    )
    rows, targets = task_rows(table, CE)
    assert len(targets) == 40 and (targets >= 0).all()
    decided = behaviour(CE).decide(rows, {})
    assert score(CE, decided, targets)["f1"] == pytest.approx(
        f1_score(targets, decided, labels=list(range(7)), average="macro", zero_division=0)
    )
    constant = np.full(40, 3)  # one class everywhere: F1 only for that class, if present
    assert score(CE, constant, targets)["f1"] == pytest.approx(
        f1_score(targets, constant, labels=list(range(7)), average="macro", zero_division=0)
    )


def test_emi_scores_one_row_per_video_with_few_videos() -> None:
    # Three videos of different lengths: per-video values repeated on every frame must count once each.
    rng = np.random.default_rng(5)
    lengths = (7, 30, 3)
    truth = rng.random((3, 6))
    pred = truth + 0.2 * rng.normal(size=(3, 6))
    parts = []
    for k, n in enumerate(lengths):
        parts.append(
            pl.DataFrame(
                {"track": [f"v{k}"] * n, "frame": np.arange(n)}
                | {c: np.full(n, pred[k, i]) for i, c in enumerate(output_columns(EMI))}
                | {c: np.full(n, truth[k, i]) for i, c in enumerate(EMI.columns)}
            )
        )
    rows, targets = task_rows(pl.concat(parts), EMI)
    assert rows.shape == (3, 6)
    got = score(EMI, behaviour(EMI).decide(rows, {}), targets)
    expected = [pearsonr(pred[:, j], truth[:, j])[0] for j in range(6)]
    assert got["r"] == pytest.approx(np.mean(expected), abs=1e-6)  # targets are float32
    # A constant prediction has no correlation: 0, not NaN.
    assert score(EMI, np.full((3, 6), 0.5), targets)["r"] == 0.0
    # A video without labels (the invalid marker) is left out.
    invalid = pl.concat(parts).with_columns(
        [
            pl.when(pl.col("track") == "v2").then(EMI.invalid).otherwise(pl.col(c)).alias(c)
            for c in EMI.columns
        ]
    )
    assert task_rows(invalid, EMI)[0].shape == (2, 6)


def test_mtl_is_the_sum_of_va_expr_and_au_per_seed() -> None:
    tasks = [TASKS[name] for name in MTL_TASKS]
    rng = np.random.default_rng(6)
    fold_scores = {
        seed: {
            f"fold_{k}": {
                t.name: {"f1" if t.name != "va" else "ccc": float(rng.random()), "baseline": 0.1}
                | {("f1" if t.name != "va" else "ccc") + "_unsmoothed": 0.0}
                for t in tasks
            }
            for k in range(3)
        }
        for seed in (0, 1)
    }
    summary = summarise_cv(fold_scores, tasks)
    for seed in ("0", "1"):
        expected = sum(summary[name]["per_seed"][seed] for name in MTL_TASKS)
        assert summary["mtl"]["per_seed"][seed] == pytest.approx(expected, abs=1e-4)
    assert summary["mtl"]["score"] == pytest.approx(
        np.mean(list(summary["mtl"]["per_seed"].values())), abs=1e-4
    )
    assert summary["mtl"]["baseline"] == pytest.approx(0.3)
    assert "mtl" not in summarise_cv(fold_scores, tasks[:2])  # not all three tracks: no MTL
