"""Consistency between two predictions of the same rows: Jensen-Shannon divergence (masked CoTEX)."""

from __future__ import annotations

import torch

EPS = 1.0e-12  # floor inside the logs: 0 * log(0) terms stay 0 and gradients stay finite


def _kl_to_mean(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Elementwise p * ln(p / m) with 0 ln 0 = 0 (the floor only guards the logs)."""
    return p * (p.clamp_min(EPS).log() - m.clamp_min(EPS).log())


def js_divergence(p: torch.Tensor, q: torch.Tensor, kind: str) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log, in [0, ln 2]) per row, averaged over rows.

    JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2. Symmetric, differentiable in both
    arguments (gradients finite even where a probability is 0), computed in float32 or wider.

    Args:
        p, q: [N, C] probabilities. "multiclass": each row a distribution over C classes (softmax).
            "multilabel": C independent Bernoulli probabilities (sigmoid); the row's divergence is the
            mean over its labels of the JS divergence between Bernoulli(p) and Bernoulli(q).
        kind: "multiclass" or "multilabel".

    Returns:
        Scalar tensor.
    """
    if p.shape != q.shape:
        raise ValueError(f"js_divergence needs equal shapes, got {tuple(p.shape)} and {tuple(q.shape)}")
    p, q = p.float(), q.float()
    if kind == "multiclass":
        m = (p + q) / 2
        per_row = 0.5 * (_kl_to_mean(p, m) + _kl_to_mean(q, m)).sum(dim=-1)
    elif kind == "multilabel":
        # Each label is the two-outcome distribution (p, 1 - p).
        m, m_not = (p + q) / 2, 1 - (p + q) / 2
        per_label = (
            _kl_to_mean(p, m) + _kl_to_mean(1 - p, m_not) + _kl_to_mean(q, m) + _kl_to_mean(1 - q, m_not)
        )
        per_row = 0.5 * per_label.mean(dim=-1)
    else:
        raise ValueError(
            f"js_divergence compares probabilities: kind must be multiclass or multilabel, got '{kind}'"
        )
    return per_row.mean()
