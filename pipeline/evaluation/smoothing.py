"""Temporal post-processing of per-frame outputs (seeds 000, 004; HSEmotion's centred mean), and the
choice of one smoothing per task on a run's tuning tracks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

from pipeline.config import SmoothingSpec
from pipeline.faces.table import nearest_usable
from pipeline.features.sequences import output_columns, outputs_of


def window_mean(values: np.ndarray, width: float) -> np.ndarray:
    """Centred sliding-window mean over time. values: [T, C]; width: window length in frames (1 = off)."""
    width = int(width)
    if width <= 1:
        return values
    return uniform_filter1d(values, size=width, axis=0, mode="nearest")


def gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter over time. values: [T, C]; sigma in frames (> 0)."""
    if sigma <= 0:
        raise ValueError(f"gaussian smoothing needs sigma > 0 frames, got {sigma}")
    return gaussian_filter1d(values, sigma=sigma, axis=0, mode="nearest")


SMOOTHERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "window": window_mean,
    "gaussian": gaussian,
    "none": lambda values, amount: values,
}


def smooth(values: np.ndarray, spec: SmoothingSpec | str) -> np.ndarray:
    """Apply one smoothing spec to [T, C] per-frame outputs of one track (probabilities or values)."""
    spec = spec if isinstance(spec, SmoothingSpec) else SmoothingSpec.parse(spec)
    if spec.method not in SMOOTHERS:
        raise ValueError(f"unknown smoothing method '{spec.method}' (known: {', '.join(SMOOTHERS)})")
    return SMOOTHERS[spec.method](np.asarray(values, dtype=np.float32), spec.amount).astype(np.float32)


def fill_faceless(values: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Seed 004's post-processing: outputs of frames without a face (source "filled") replaced by those of
    the nearest frame with one, before smoothing. values: [T, C]; sources: [T] ("face" / "filled" /
    "prior"). A track without any face frame is returned as it is."""
    nearest = nearest_usable(np.asarray(sources) == "face")
    if len(nearest) == 0 or nearest[0] < 0:
        return values
    return values[nearest]


def smooth_table(table: pl.DataFrame, task, spec: SmoothingSpec, fill: bool = False) -> pl.DataFrame:
    """Smooth one task's output columns of a predictions table track by track (rows sorted by frame);
    the grouping columns (`seed`, `role`) are kept apart, so no two tracks or seeds ever mix.

    Args:
        fill: first replace the outputs of frames without a face by their nearest face frame's
            (`fill_faceless`; needs the table's `source` column).
    """
    keys = [c for c in ("seed", "role", "track") if c in table.columns]
    parts = []
    for _, rows in table.sort([*keys, "frame"]).group_by(keys, maintain_order=True):
        values = outputs_of(rows, task)
        if fill:
            values = fill_faceless(values, rows["source"].to_numpy())
        values = smooth(values, spec)
        parts.append(
            rows.with_columns([pl.Series(c, values[:, i]) for i, c in enumerate(output_columns(task))])
        )
    return pl.concat(parts)
