"""Frame index: one row per timeline frame, whether it decoded, with cheap per-frame quality measures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import polars as pl

from pipeline.datasets.video import Timeline, TimelineDecoder


def index_video(path: Path) -> tuple[pl.DataFrame, Timeline]:
    """Decode a video once, streaming, and describe every frame of its timeline.

    Returns:
        A table with one row per timeline frame 0..n_frames-1: `frame` (int32), `decoded` (bool; false for
        a frame that did not decode, which keeps its index so that labels stay on their frames), `luma`
        (float32 mean grey level, 0-255) and `sharpness` (float32 variance of the Laplacian; low values flag
        blur), both null where the frame did not decode. And the video's `Timeline`.

    Raises:
        VideoOpenError: the file is missing, empty, or OpenCV cannot open it.
    """
    decoder = TimelineDecoder(path)
    luma: list[float | None] = []
    sharpness: list[float | None] = []
    for index, rgb in decoder:
        assert index == len(luma)  # the decoder yields every timeline index in order
        if rgb is None:
            luma.append(None)
            sharpness.append(None)
            continue
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        luma.append(float(grey.mean()))
        sharpness.append(float(cv2.Laplacian(grey, cv2.CV_32F).var()))
    table = pl.DataFrame(
        {
            "frame": pl.Series(np.arange(len(luma)), dtype=pl.Int32),
            "decoded": pl.Series([value is not None for value in luma], dtype=pl.Boolean),
            "luma": pl.Series(luma, dtype=pl.Float32),
            "sharpness": pl.Series(sharpness, dtype=pl.Float32),
        }
    )
    return table, decoder.timeline
