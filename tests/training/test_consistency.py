"""Jensen-Shannon divergence against scipy, edge cases and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from pipeline.training.consistency import js_divergence


def _scipy_multiclass(p: np.ndarray, q: np.ndarray) -> float:
    # scipy returns the square root of the divergence (natural log by default).
    return float(np.mean([jensenshannon(a, b) ** 2 for a, b in zip(p, q, strict=True)]))


def _scipy_multilabel(p: np.ndarray, q: np.ndarray) -> float:
    per_label = [
        [jensenshannon([a, 1 - a], [b, 1 - b]) ** 2 for a, b in zip(row_p, row_q, strict=True)]
        for row_p, row_q in zip(p, q, strict=True)
    ]
    return float(np.mean(np.mean(per_label, axis=1)))


def test_multiclass_matches_scipy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), size=16)
    q = rng.dirichlet(np.ones(8), size=16)
    p[0, :3] = 0  # zeros in p
    p[0] /= p[0].sum()
    got = js_divergence(
        torch.tensor(p, dtype=torch.float32), torch.tensor(q, dtype=torch.float32), "multiclass"
    )
    assert float(got) == pytest.approx(_scipy_multiclass(p, q), rel=1e-5)


def test_multilabel_matches_scipy():
    rng = np.random.default_rng(1)
    p, q = rng.uniform(size=(16, 12)), rng.uniform(size=(16, 12))
    p[0, :4] = 0
    q[1, :4] = 1
    got = js_divergence(
        torch.tensor(p, dtype=torch.float32), torch.tensor(q, dtype=torch.float32), "multilabel"
    )
    assert float(got) == pytest.approx(_scipy_multilabel(p, q), rel=1e-5)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_edge_cases(kind):
    p = torch.softmax(torch.randn(4, 5), dim=1) if kind == "multiclass" else torch.rand(4, 5)
    assert float(js_divergence(p, p, kind)) == pytest.approx(0.0, abs=1e-7)
    one_hot = torch.eye(5)[:4]
    other = torch.eye(5)[1:5]
    if kind == "multiclass":
        assert float(js_divergence(one_hot, other, kind)) == pytest.approx(math.log(2), rel=1e-6)
    else:  # every label certain and opposite
        assert float(js_divergence(torch.ones(4, 5), torch.zeros(4, 5), kind)) == pytest.approx(math.log(2))
    # Symmetric.
    q = torch.softmax(torch.randn(4, 5), dim=1)
    assert float(js_divergence(p, q, kind)) == pytest.approx(float(js_divergence(q, p, kind)))


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_gradients_finite_with_zeros(kind):
    logits = torch.randn(4, 5, requires_grad=True)
    p = logits.softmax(dim=1) if kind == "multiclass" else logits.sigmoid()
    q = torch.eye(5)[:4]  # hard zeros and ones
    loss = js_divergence(p, q, kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # Zeros on the differentiated side too.
    zeros = torch.zeros(4, 5, requires_grad=True)
    js_divergence(zeros, q, kind).backward()
    assert torch.isfinite(zeros.grad).all()


def test_rejects_regression_and_shape_mismatch():
    with pytest.raises(ValueError):
        js_divergence(torch.rand(2, 2), torch.rand(2, 2), "regression")
    with pytest.raises(ValueError):
        js_divergence(torch.rand(2, 2), torch.rand(2, 3), "multiclass")
