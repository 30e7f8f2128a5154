"""Temporal post-processing of per-frame outputs (seeds 000, 004; HSEmotion's centred mean)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d


def window_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Centred sliding-window mean over time. values: [T, C]; width: window length in frames (1 = off)."""
    if width <= 1:
        return values
    return uniform_filter1d(values, size=width, axis=0, mode="nearest")


def gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter over time. values: [T, C]; sigma in frames (0 = off)."""
    if sigma <= 0:
        return values
    return gaussian_filter1d(values, sigma=sigma, axis=0, mode="nearest")


def identity(values: np.ndarray) -> np.ndarray:
    """No smoothing."""
    return values


SMOOTHERS: dict[str, Callable[..., np.ndarray]] = {
    "window": window_mean,
    "gaussian": gaussian,
    "none": identity,
}


def smooth(values: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Apply one smoothing spec: `{"method": "window", "width": 25}`, `{"method": "gaussian", "sigma": 3.0}`.

    values: [T, C] per-frame outputs of one track (probabilities or regression values).
    """
    spec = dict(spec)
    method = spec.pop("method")
    if method not in SMOOTHERS:
        raise ValueError(f"unknown smoothing method '{method}' (known: {', '.join(SMOOTHERS)})")
    return SMOOTHERS[method](np.asarray(values, dtype=np.float32), **spec).astype(np.float32)
