"""Official ABAW metrics (docs/FORMATS.md "Metrics") and the trivial baselines they are judged against.

Conventions shared by every function here:
- inputs are numpy arrays; outputs are plain Python floats / lists (JSON-ready, never numpy scalars);
- frames whose *true* label carries the task's invalid marker (EXPR / AU -1, VA -5) are excluded;
- a metric with no valid frame left is undefined: it raises ValueError rather than returning NaN, because
  NaN in a metrics file silently breaks `dvc metrics diff`.

Only numpy is used at run time (scikit-learn is a test dependency); tests check these against sklearn.
"""

from __future__ import annotations

import numpy as np

# The official markers of an unlabelled frame (FORMATS.md); `pipeline.tasks.definitions` uses the same.
EXPR_INVALID = -1
AU_INVALID = -1
VA_INVALID = -5.0
DEFAULT_AU_GRID = np.linspace(0.05, 0.95, 19)


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) elementwise; 0 where TP + FP + FN = 0 (sklearn's zero_division=0)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _check_same_length(pred: np.ndarray, true: np.ndarray, what: str) -> None:
    if pred.shape != true.shape:
        raise ValueError(f"{what}: predictions {pred.shape} and targets {true.shape} differ in shape")


def _check_classes(values: np.ndarray, num_classes: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{what}: values must be class indices 0..{num_classes - 1}")


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation coefficient with population statistics.

    CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2).

    When either series is constant the covariance is exactly 0, so the CCC is 0.0 — including the 0/0
    case where both are the same constant: a constant prediction carries no information about how the
    target varies, so it scores like any other constant (this is the "trivial baseline" of the VA track).

    Args:
        x: [N] one series (e.g. predictions).
        y: [N] the other series (e.g. targets).

    Raises:
        ValueError: different lengths, empty input, or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    _check_same_length(x, y, "ccc")
    if x.size == 0:
        raise ValueError("ccc: no values (CCC is undefined for an empty series)")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("ccc: inputs contain NaN or infinite values")
    # Test constancy exactly: floating-point mean subtraction would leave ~1e-17 residues otherwise.
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    mean_x, mean_y = x.mean(), y.mean()
    var_x, var_y = x.var(), y.var()  # ddof=0: population statistics, as in the official script
    cov = np.mean((x - mean_x) * (y - mean_y))
    return float(2 * cov / (var_x + var_y + (mean_x - mean_y) ** 2))


def va_score(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """VA track score: CCC of valence and of arousal, and their mean P.

    Args:
        pred: [N, 2] predicted (valence, arousal); clipped to [-1, 1] before scoring, as peers do.
        true: [N, 2] targets; rows with a -5 are unlabelled and excluded.

    Returns:
        {"valence": CCC_V, "arousal": CCC_A, "mean": (CCC_V + CCC_A) / 2}.

    Raises:
        ValueError: shape mismatch, non-finite predictions, or no labelled row.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    _check_same_length(pred, true, "va_score")
    if pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"va_score: expected [N, 2] arrays, got {pred.shape}")
    valid = ~(true == VA_INVALID).any(axis=1)
    if not valid.any():
        raise ValueError("va_score: no labelled frame (every target row is -5)")
    pred = np.clip(pred[valid], -1.0, 1.0)
    true = true[valid]
    valence = ccc(pred[:, 0], true[:, 0])
    arousal = ccc(pred[:, 1], true[:, 1])
    return {"valence": valence, "arousal": arousal, "mean": (valence + arousal) / 2}


def confusion(pred: np.ndarray, true: np.ndarray, num_classes: int = 8) -> np.ndarray:
    """Confusion matrix over labelled frames.

    Args:
        pred: [N] predicted class indices.
        true: [N] true class indices, -1 for unlabelled frames (excluded).
        num_classes: K.

    Returns:
        int64 [K, K]: entry (t, p) counts frames of true class t predicted as p (rows = true).
    """
    pred = np.asarray(pred).ravel()
    true = np.asarray(true).ravel()
    _check_same_length(pred, true, "confusion")
    valid = true != EXPR_INVALID
    pred = pred[valid].astype(np.int64)
    true = true[valid].astype(np.int64)
    _check_classes(true, num_classes, "confusion (true)")
    _check_classes(pred, num_classes, "confusion (pred)")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def expr_f1(pred: np.ndarray, true: np.ndarray, num_classes: int = 8) -> dict[str, float | list[float]]:
    """EXPR track score: mean F1 over all K classes.

    The label set is fixed to 0..K-1: a class absent from both targets and predictions has F1 = 0 and
    still counts in the mean (sklearn's `average='macro'` without `labels=` would silently drop it and
    inflate the score; with `labels=range(K), zero_division=0` it agrees with this function).

    Args:
        pred: [N] predicted class indices 0..K-1.
        true: [N] true class indices, -1 for unlabelled frames (excluded).
        num_classes: K (8 for EXPR, 7 for compound expressions).

    Returns:
        {"f1": mean F1, "per_class": [K] F1 per class}.

    Raises:
        ValueError: shape mismatch, out-of-range classes, or no labelled frame.
    """
    true_arr = np.asarray(true).ravel()
    if not (true_arr != EXPR_INVALID).any():
        raise ValueError("expr_f1: no labelled frame (every target is -1)")
    matrix = confusion(pred, true, num_classes)
    tp = np.diag(matrix)
    per_class = _f1_from_counts(tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp)
    return {"f1": float(per_class.mean()), "per_class": [float(v) for v in per_class]}


def _labelled_au(true: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Labelled rows of AU targets: ([N] bool mask, [M, C] bool targets of those rows).

    Raises:
        ValueError: not 2-D, no labelled row, or labelled values other than 0/1.
    """
    true = np.asarray(true)
    if true.ndim != 2:
        raise ValueError(f"{what}: expected [N, C] targets, got shape {true.shape}")
    valid = ~(true == AU_INVALID).any(axis=1)
    if not valid.any():
        raise ValueError(f"{what}: no labelled frame (every target row contains -1)")
    labelled = true[valid]
    if not np.isin(labelled, (0, 1)).all():
        raise ValueError(f"{what}: labelled targets must be 0 or 1")
    return valid, labelled.astype(bool)


def au_f1(pred: np.ndarray, true: np.ndarray) -> dict[str, float | list[float]]:
    """AU track score: mean over AUs of the binary F1 of each AU.

    Args:
        pred: [N, 12] 0/1 predictions (already thresholded, see `apply_thresholds`).
        true: [N, 12] 0/1 targets; rows containing -1 are unlabelled and excluded.

    Returns:
        {"f1": mean F1, "per_au": [12] F1 per AU}; an AU never positive in either array scores 0.

    Raises:
        ValueError: shape mismatch, values other than 0/1, or no labelled row.
    """
    pred = np.asarray(pred)
    _check_same_length(pred, np.asarray(true), "au_f1")
    valid, true = _labelled_au(true, "au_f1")
    pred = pred[valid]
    if not np.isin(pred, (0, 1)).all():
        raise ValueError("au_f1: predictions must be 0 or 1")
    pred = pred.astype(bool)
    tp = (pred & true).sum(axis=0)
    fp = (pred & ~true).sum(axis=0)
    fn = (~pred & true).sum(axis=0)
    per_au = _f1_from_counts(tp, fp, fn)
    return {"f1": float(per_au.mean()), "per_au": [float(v) for v in per_au]}


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """int64 [N, C] 0/1 predictions: probs[:, j] >= thresholds[j]. probs: [N, C]; thresholds: [C]."""
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if probs.ndim != 2 or thresholds.shape != (probs.shape[1],):
        raise ValueError(f"apply_thresholds: probs {probs.shape} and thresholds {thresholds.shape} disagree")
    return (probs >= thresholds[None, :]).astype(np.int64)


def tune_au_thresholds(probs: np.ndarray, true: np.ndarray, grid: np.ndarray = DEFAULT_AU_GRID) -> np.ndarray:
    """Per-AU decision threshold that maximises F1 on the given data.

    Tune on training folds only: thresholds tuned on the fold being reported inflate its score.

    Args:
        probs: [N, C] predicted probabilities.
        true: [N, C] 0/1 targets; rows containing -1 are excluded.
        grid: [G] candidate thresholds; a prediction is positive when prob >= threshold.

    Returns:
        float64 [C] thresholds; ties go to the candidate closest to 0.5 (the least tuned choice).

    Raises:
        ValueError: shape mismatch, empty grid, or no labelled row.
    """
    probs = np.asarray(probs, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64).ravel()
    if grid.size == 0:
        raise ValueError("tune_au_thresholds: empty threshold grid")
    if not np.isfinite(probs).all():
        raise ValueError("tune_au_thresholds: probabilities contain NaN or infinite values")
    _check_same_length(probs, np.asarray(true), "tune_au_thresholds")
    valid, positives = _labelled_au(true, "tune_au_thresholds")
    probs = probs[valid]

    # Closest-to-0.5 first, so argmax's "first maximum" rule breaks ties towards 0.5.
    order = np.argsort(np.abs(grid - 0.5), kind="stable")
    candidates = grid[order]
    thresholds = np.empty(probs.shape[1])
    for j in range(probs.shape[1]):
        predicted = probs[:, j, None] >= candidates[None, :]  # [M, G]
        positive = positives[:, j, None]
        tp = (predicted & positive).sum(axis=0)
        fp = (predicted & ~positive).sum(axis=0)
        fn = (~predicted & positive).sum(axis=0)
        thresholds[j] = candidates[np.argmax(_f1_from_counts(tp, fp, fn))]
    return thresholds


def expr_baselines(train_true: np.ndarray, test_true: np.ndarray, num_classes: int = 8) -> dict[str, float]:
    """Trivial EXPR baselines a model must beat.

    - "majority": F1 of predicting the training set's most frequent class (ties: lowest index) for every
      test frame.
    - "uniform": expected mean F1 of predicting each class with probability 1/K, computed analytically
      from expected counts: for class c with test prevalence p_c, precision = p_c and recall = 1/K, so
      F1_c = 2 p_c (1/K) / (p_c + 1/K) (0 for an absent class).
    - "best": the larger of the two.

    Args:
        train_true: [N_train] training labels, -1 excluded.
        test_true: [N_test] test labels, -1 excluded.
        num_classes: K.

    Raises:
        ValueError: no labelled frame in either set, or out-of-range classes.
    """
    train = np.asarray(train_true).ravel()
    train = train[train != EXPR_INVALID].astype(np.int64)
    if train.size == 0:
        raise ValueError("expr_baselines: no labelled training frame (every target is -1)")
    _check_classes(train, num_classes, "expr_baselines (train)")
    majority_class = int(np.argmax(np.bincount(train, minlength=num_classes)))

    test = np.asarray(test_true).ravel()
    majority = expr_f1(np.full(test.shape, majority_class), test, num_classes)["f1"]

    labelled = test[test != EXPR_INVALID].astype(np.int64)
    prevalence = np.bincount(labelled, minlength=num_classes) / labelled.size
    rate = 1.0 / num_classes
    uniform_per_class = np.divide(
        2 * prevalence * rate,
        prevalence + rate,
        out=np.zeros(num_classes),
        where=prevalence > 0,
    )
    uniform = float(uniform_per_class.mean())
    return {"majority": majority, "uniform": uniform, "best": max(majority, uniform)}


def au_all_positive_f1(test_true: np.ndarray) -> float:
    """Mean AU F1 of predicting every AU present in every frame (per AU: 2p / (p + 1), p = prevalence).

    Args:
        test_true: [N, 12] 0/1 targets; rows containing -1 are excluded.
    """
    true = np.asarray(test_true)
    return float(au_f1(np.ones_like(true), true)["f1"])


def va_constant_ccc(test_true: np.ndarray | None = None, value: float = 0.0) -> float:
    """Mean CCC of a constant VA prediction: the trivial VA baseline, 0.0 by construction.

    It is computed through `ccc` / `va_score` rather than written down, so a change to how `ccc` treats
    constant series shows up here (and in its test).

    Args:
        test_true: [N, 2] targets (-5 rows excluded); when None, a fixed non-constant series is used.
        value: the constant predicted for both dimensions.
    """
    if test_true is None:
        ramp = np.linspace(-1.0, 1.0, 21)
        test_true = np.stack([ramp, ramp[::-1]], axis=1)
    true = np.asarray(test_true, dtype=np.float64)
    return float(va_score(np.full(true.shape, value), true)["mean"])


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two series; 0.0 when either is constant (no linear information).

    Raises:
        ValueError: different lengths, fewer than two values, or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    _check_same_length(x, y, "pearson")
    if x.size < 2:
        raise ValueError("pearson: needs at least two values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("pearson: inputs contain NaN or infinite values")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.sum(xc * yc) / np.sqrt(np.sum(xc**2) * np.sum(yc**2)))


def mean_pearson(pred: np.ndarray, true: np.ndarray) -> dict[str, float | list[float]]:
    """EMI track score: mean over dimensions of the Pearson r between predictions and targets.

    Args:
        pred: [N, C] predictions (one row per video); true: [N, C] targets (rows already valid).

    Returns:
        {"r": mean r, "per_dim": [C] r per dimension}.
    """
    pred, true = np.atleast_2d(np.asarray(pred, np.float64)), np.atleast_2d(np.asarray(true, np.float64))
    _check_same_length(pred, true, "mean_pearson")
    per_dim = [pearson(pred[:, j], true[:, j]) for j in range(true.shape[1])]
    return {"r": float(np.mean(per_dim)), "per_dim": per_dim}


def mean_ccc(pred: np.ndarray, true: np.ndarray) -> dict[str, float | list[float]]:
    """Mean CCC over dimensions of valid rows ([N, C] each); VA's P for C = 2 (predictions clipped)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    _check_same_length(pred, true, "mean_ccc")
    per_dim = [ccc(np.clip(pred[:, j], -1.0, 1.0), true[:, j]) for j in range(true.shape[1])]
    return {"ccc": float(np.mean(per_dim)), "per_dim": per_dim}
