"""Seed 004's scene ensemble: split the training tracks into subsets by what their scenes look like, train
one model per subset, and let the subset models vote (their probabilities averaged,
`pipeline.models.ensemble.EnsembleModel`).

The scene statistic is the track's mean frame brightness (the frame index's `luma`, a whole-frame mean,
which the background dominates at the crop sizes of face videos); the subsets are its quantiles over the
training tracks, so each holds a similar number of tracks. Uses no labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline import artifacts


def scene_brightness(frames_dir: Path, tracks: list[str]) -> dict[str, float]:
    """track -> mean luma of its video's decoded frames (0-255)."""
    video_of = dict(pl.read_parquet(artifacts.tracks_table(frames_dir)).select("track", "video").iter_rows())
    out = {}
    for track in tracks:
        index = pl.read_parquet(artifacts.frame_index(frames_dir, video_of[track]))
        out[track] = float(index.filter(pl.col("decoded"))["luma"].mean() or 0.0)
    return out


def scene_subsets(brightness: dict[str, float], n_subsets: int) -> list[list[str]]:
    """The tracks split into `n_subsets` brightness quantiles (darkest first), each sorted by name.

    Raises:
        ValueError: fewer tracks than twice the subsets (a subset model needs some data).
    """
    if len(brightness) < 2 * n_subsets:
        raise ValueError(
            f"train.scenes {n_subsets}: {len(brightness)} training tracks cannot fill {n_subsets} subsets "
            "of at least 2"
        )
    order = sorted(brightness, key=lambda track: (brightness[track], track))
    return [sorted(part.tolist()) for part in np.array_split(np.array(order, dtype=object), n_subsets)]
