"""ABAW metrics against scikit-learn / numpy references and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from pipeline.evaluation import metrics

SEEDS = [0, 1, 2, 3]


def _ccc_reference(x: np.ndarray, y: np.ndarray) -> float:
    """CCC via the Pearson form: 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2), population statistics."""
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = x.std(), y.std()
    return 2 * r * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


# ---------------------------------------------------------------- CCC / VA


@pytest.mark.parametrize("seed", SEEDS)
def test_ccc_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 500)
    x = 0.6 * y + rng.normal(0.1, 0.3, 500)
    value = metrics.ccc(x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(_ccc_reference(x, y), abs=1e-12)
    assert value == pytest.approx(metrics.ccc(y, x), abs=1e-12)  # symmetric


def test_ccc_identical_and_negated() -> None:
    x = np.linspace(-0.8, 0.9, 101)
    assert metrics.ccc(x, x) == pytest.approx(1.0)
    # Zero-mean series: CCC of the negation is exactly -1.
    z = x - x.mean()
    assert metrics.ccc(-z, z) == pytest.approx(-1.0)
    # With a mean shift the negation is worse than perfect anti-agreement, never better.
    assert -1.0 <= metrics.ccc(-x, x) < 0


def test_ccc_penalises_bias_unlike_pearson() -> None:
    x = np.linspace(-0.5, 0.5, 50)
    assert metrics.ccc(x + 0.3, x) < 1.0
    assert np.corrcoef(x + 0.3, x)[0, 1] == pytest.approx(1.0)


def test_ccc_constant_prediction_is_zero() -> None:
    y = np.linspace(-1, 1, 30)
    assert metrics.ccc(np.full(30, 0.1), y) == 0.0
    assert metrics.ccc(y, np.full(30, 0.1)) == 0.0
    # 0/0: both constant and equal.
    assert metrics.ccc(np.full(5, 0.3), np.full(5, 0.3)) == 0.0


def test_ccc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        metrics.ccc(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="shape"):
        metrics.ccc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        metrics.ccc(np.array([0.1, np.nan, 0.2]), np.array([0.1, 0.2, 0.3]))


@pytest.mark.parametrize("seed", SEEDS)
def test_va_score_excludes_invalid_rows_and_clips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    true = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    pred = true + rng.normal(0, 0.6, (n, 2))  # some predictions fall outside [-1, 1]
    assert (np.abs(pred) > 1).any()
    invalid = rng.random(n) < 0.2
    true[invalid] = -5
    pred[invalid] = 50.0  # would wreck the score if these rows were kept

    score = metrics.va_score(pred, true)
    keep = ~invalid
    clipped = np.clip(pred[keep], -1, 1)
    expected_v = _ccc_reference(clipped[:, 0], true[keep, 0].astype(np.float64))
    expected_a = _ccc_reference(clipped[:, 1], true[keep, 1].astype(np.float64))
    assert score["valence"] == pytest.approx(expected_v, abs=1e-6)
    assert score["arousal"] == pytest.approx(expected_a, abs=1e-6)
    assert score["mean"] == pytest.approx((expected_v + expected_a) / 2, abs=1e-6)
    assert all(type(v) is float for v in score.values())
    # Clipping matters: unclipped predictions score differently.
    assert score["valence"] != pytest.approx(_ccc_reference(pred[keep, 0], true[keep, 0]), abs=1e-9)


def test_va_score_no_valid_row_raises() -> None:
    with pytest.raises(ValueError, match="no labelled frame"):
        metrics.va_score(np.zeros((3, 2)), np.full((3, 2), -5.0))


def test_va_constant_ccc() -> None:
    assert metrics.va_constant_ccc() == 0.0
    true = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    true[:5] = -5
    assert metrics.va_constant_ccc(true, value=0.2) == 0.0


# ---------------------------------------------------------------- EXPR


@pytest.mark.parametrize("seed", SEEDS)
def test_expr_f1_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 1000
    true = rng.integers(0, 8, n)
    pred = np.where(rng.random(n) < 0.5, true, rng.integers(0, 8, n))
    true[rng.random(n) < 0.15] = -1
    keep = true != -1

    result = metrics.expr_f1(pred, true)
    reference = f1_score(true[keep], pred[keep], labels=range(8), average="macro", zero_division=0)
    per_class = f1_score(true[keep], pred[keep], labels=range(8), average=None, zero_division=0)
    assert result["f1"] == pytest.approx(reference, abs=1e-12)
    assert result["per_class"] == pytest.approx(list(per_class), abs=1e-12)
    assert type(result["f1"]) is float
    assert all(type(v) is float for v in result["per_class"])


@pytest.mark.parametrize("seed", SEEDS)
def test_expr_f1_class_absent_from_true_and_pred_counts_as_zero(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    true = rng.integers(0, 7, n)  # class 7 never occurs...
    pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, 7, n))  # ...nor is predicted
    result = metrics.expr_f1(pred, true)
    assert result["per_class"][7] == 0.0
    assert result["f1"] == pytest.approx(
        f1_score(true, pred, labels=range(8), average="macro", zero_division=0), abs=1e-12
    )
    # The bug the explicit label list prevents: macro without labels averages over 7 classes only.
    dropped = f1_score(true, pred, average="macro", zero_division=0)
    assert dropped == pytest.approx(result["f1"] * 8 / 7, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_expr_f1_class_in_true_but_never_predicted(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    true = rng.integers(0, 8, n)
    pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, 8, n))
    pred[pred == 3] = 4  # class 3 is in the targets but never predicted
    result = metrics.expr_f1(pred, true)
    assert result["per_class"][3] == 0.0
    assert result["f1"] == pytest.approx(
        f1_score(true, pred, labels=range(8), average="macro", zero_division=0), abs=1e-12
    )


def test_expr_f1_other_class_count() -> None:
    true = np.array([0, 1, 2, 3, 4, 5, 6, 6])
    pred = np.array([0, 1, 2, 3, 4, 5, 6, 0])
    result = metrics.expr_f1(pred, true, num_classes=7)
    assert len(result["per_class"]) == 7
    assert result["f1"] == pytest.approx(
        f1_score(true, pred, labels=range(7), average="macro", zero_division=0)
    )


def test_expr_f1_errors() -> None:
    with pytest.raises(ValueError, match="no labelled frame"):
        metrics.expr_f1(np.zeros(4, dtype=int), np.full(4, -1))
    with pytest.raises(ValueError, match="class indices"):
        metrics.expr_f1(np.array([0, 8]), np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        metrics.expr_f1(np.array([0, -1]), np.array([0, 1]))  # a -1 prediction on a labelled frame


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(-1, 8, 300)
    pred = rng.integers(0, 8, 300)
    keep = true != -1
    matrix = metrics.confusion(pred, true)
    assert matrix.shape == (8, 8)
    np.testing.assert_array_equal(matrix, confusion_matrix(true[keep], pred[keep], labels=range(8)))


def test_confusion_rows_are_true() -> None:
    matrix = metrics.confusion(np.array([2, 2, 2]), np.array([0, 0, 1]), num_classes=3)
    assert matrix[0, 2] == 2 and matrix[1, 2] == 1 and matrix.sum() == 3


# ---------------------------------------------------------------- AU


@pytest.mark.parametrize("seed", SEEDS)
def test_au_f1_matches_sklearn_and_excludes_invalid_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    true = (rng.random((n, 12)) < rng.uniform(0.05, 0.5, 12)).astype(np.int64)
    pred = np.where(rng.random((n, 12)) < 0.7, true, 1 - true)
    invalid = rng.random(n) < 0.2
    true[invalid] = -1
    pred[invalid] = 1 - pred[invalid]  # garbage on unlabelled rows must not count

    result = metrics.au_f1(pred, true)
    keep = ~invalid
    per_au = [f1_score(true[keep, j], pred[keep, j], zero_division=0) for j in range(12)]
    assert result["per_au"] == pytest.approx(per_au, abs=1e-12)
    assert result["f1"] == pytest.approx(np.mean(per_au), abs=1e-12)
    assert type(result["f1"]) is float


def test_au_f1_row_with_single_invalid_entry_is_excluded() -> None:
    true = np.array([[1, 0], [0, 1], [1, -1]])
    pred = np.array([[1, 0], [0, 1], [0, 0]])
    # Third row is partly -1: the whole row is dropped, the first two are perfect.
    assert metrics.au_f1(pred, true)["per_au"] == [1.0, 1.0]


def test_au_f1_errors() -> None:
    with pytest.raises(ValueError, match="no labelled frame"):
        metrics.au_f1(np.zeros((2, 12), dtype=int), np.full((2, 12), -1))
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.au_f1(np.full((2, 12), 0.7), np.zeros((2, 12), dtype=int))


@pytest.mark.parametrize("seed", SEEDS)
def test_tuned_thresholds_beat_half_on_skewed_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    prevalence = rng.uniform(0.03, 0.15, 12)  # rare AUs: a calibrated model rarely reaches 0.5
    true = (rng.random((n, 12)) < prevalence).astype(np.int64)
    probs = np.clip(prevalence + 0.25 * true + rng.normal(0, 0.08, (n, 12)), 0, 1)
    true[:100] = -1

    thresholds = metrics.tune_au_thresholds(probs, true)
    assert thresholds.shape == (12,)
    assert np.isin(np.round(thresholds, 6), np.round(metrics.DEFAULT_AU_GRID, 6)).all()
    tuned = metrics.au_f1(metrics.apply_thresholds(probs, thresholds), true)["f1"]
    at_half = metrics.au_f1(metrics.apply_thresholds(probs, np.full(12, 0.5)), true)["f1"]
    assert tuned > at_half

    # Each tuned threshold is the grid's best for its AU.
    keep = (true != -1).all(axis=1)
    for j in range(12):
        best = max(
            f1_score(true[keep, j], (probs[keep, j] >= t).astype(int), zero_division=0)
            for t in metrics.DEFAULT_AU_GRID
        )
        got = f1_score(true[keep, j], (probs[keep, j] >= thresholds[j]).astype(int), zero_division=0)
        assert got == pytest.approx(best, abs=1e-12)


def test_tune_thresholds_ties_go_to_half() -> None:
    # Perfectly separable: every threshold in (0.2, 0.8] is optimal; 0.5 is chosen.
    probs = np.array([[0.1], [0.2], [0.8], [0.9]])
    true = np.array([[0], [0], [1], [1]])
    assert metrics.tune_au_thresholds(probs, true)[0] == pytest.approx(0.5)


# ---------------------------------------------------------------- baselines


def test_expr_baselines_hand_computed() -> None:
    # Training majority is class 1. Test (8 labelled frames): class 0 x4, class 1 x2, class 2 x2; one -1.
    train = np.array([1, 1, 1, 0, 2, -1, -1, -1])
    test = np.array([0, 0, 0, 0, 1, 1, 2, 2, -1])
    result = metrics.expr_baselines(train, test, num_classes=4)
    # Majority: class 1 gets precision 2/8, recall 1 -> F1 = 2*(1/4)/(1/4+1) = 0.4; others 0; mean / 4.
    assert result["majority"] == pytest.approx(0.4 / 4)
    # Uniform (rate 1/4): p = (1/2, 1/4, 1/4, 0) -> F1 = 2p(1/4)/(p+1/4) = (1/3, 1/4, 1/4, 0); mean / 4.
    assert result["uniform"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 4) / 4)
    assert result["best"] == pytest.approx(result["uniform"])
    assert all(type(v) is float for v in result.values())


def test_expr_uniform_baseline_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    test = rng.choice(8, 200_000, p=[0.3, 0.05, 0.05, 0.05, 0.2, 0.1, 0.1, 0.15])
    simulated = metrics.expr_f1(rng.integers(0, 8, test.size), test)["f1"]
    assert metrics.expr_baselines(test, test)["uniform"] == pytest.approx(simulated, abs=2e-3)


def test_au_all_positive_hand_computed() -> None:
    # AU0 prevalence 1/2 -> F1 2/3; AU1 prevalence 1/4 -> F1 2/5; the -1 row is excluded.
    true = np.array([[1, 1], [1, 0], [0, 0], [0, 0], [-1, 0]])
    assert metrics.au_all_positive_f1(true) == pytest.approx((2 / 3 + 2 / 5) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_matches_scipy(seed: int) -> None:
    from scipy.stats import pearsonr

    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    assert metrics.pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-10)
    pred, true = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    result = metrics.mean_pearson(pred, true)
    expected = [pearsonr(pred[:, j], true[:, j])[0] for j in range(6)]
    np.testing.assert_allclose(result["per_dim"], expected, atol=1e-10)
    assert result["r"] == pytest.approx(np.mean(expected))


def test_pearson_constant_is_zero_and_bad_input_raises() -> None:
    assert metrics.pearson(np.ones(5), np.arange(5.0)) == 0.0
    with pytest.raises(ValueError, match="two values"):
        metrics.pearson(np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="NaN"):
        metrics.pearson(np.array([0.0, np.nan]), np.array([0.0, 1.0]))


def test_mean_ccc_clips_and_averages_dimensions() -> None:
    rng = np.random.default_rng(3)
    true = rng.uniform(-1, 1, (50, 2))
    pred = true * 1.5  # some predictions beyond [-1, 1]: clipped as VA scoring does
    result = metrics.mean_ccc(pred, true)
    per_dim = [_ccc_reference(np.clip(pred[:, j], -1, 1), true[:, j]) for j in range(2)]
    np.testing.assert_allclose(result["per_dim"], per_dim, atol=1e-10)
    assert result["ccc"] == pytest.approx(np.mean(per_dim))
