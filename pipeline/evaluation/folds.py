"""Subject-grouped cross-validation folds over the train+validation tracks."""

from __future__ import annotations

import numpy as np
import polars as pl


def assign_folds(tracks: pl.DataFrame, *, n_folds: int, seed: int) -> pl.DataFrame:
    """Give every track a fold so that no subject spans two folds and folds hold similar frame counts.

    Args:
        tracks: one row per track with columns `track`, `subject`, `n_frames`.
        n_folds: number of folds (at most the number of subjects).
        seed: shuffles subjects before the greedy balancing, so ties break reproducibly.

    Returns:
        `tracks` with an int column `fold` in [0, n_folds).
    """
    subjects = tracks.group_by("subject").agg(pl.col("n_frames").sum()).sort("subject")
    if subjects.height < n_folds:
        raise ValueError(f"{subjects.height} subjects cannot fill {n_folds} subject-independent folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(subjects.height)
    # Largest subjects first, each into the currently lightest fold (longest-processing-time rule).
    frames = subjects["n_frames"].to_numpy()[order]
    order = order[np.argsort(-frames, kind="stable")]
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of_subject: dict[str, int] = {}
    for i in order:
        fold = int(np.argmin(load))
        fold_of_subject[subjects["subject"][int(i)]] = fold
        load[fold] += int(subjects["n_frames"][int(i)])
    return tracks.with_columns(
        pl.col("subject").replace_strict(fold_of_subject, return_dtype=pl.Int32).alias("fold")
    )
