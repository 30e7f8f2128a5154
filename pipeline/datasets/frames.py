"""Decoded-frame index: what actually decodes, with cheap per-frame quality measures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import polars as pl

from pipeline.datasets.video import iter_frames


def index_video(path: Path) -> pl.DataFrame:
    """Decode a video once, streaming, and describe every decoded frame.

    Returns:
        One row per decoded frame: `frame` (0-based), `luma` (mean grey level, 0-255) and
        `sharpness` (variance of the Laplacian; low values flag blur).
    """
    luma, sharpness = [], []
    for _, rgb in iter_frames(path):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        luma.append(float(grey.mean()))
        sharpness.append(float(cv2.Laplacian(grey, cv2.CV_32F).var()))
    return pl.DataFrame(
        {
            "frame": np.arange(len(luma), dtype=np.int32),
            "luma": np.asarray(luma, dtype=np.float32),
            "sharpness": np.asarray(sharpness, dtype=np.float32),
        }
    )
