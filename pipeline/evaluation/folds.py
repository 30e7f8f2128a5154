"""Leak-free evaluation splits: groups of tracks that must stay together, folds, and each run's roles.

A group is a connected component of the graph whose nodes are tracks and whose edges join two tracks of
the same raw video (both people of a two-person video) or of the same subject (every video of one
person). Folds are unions of whole groups. A run assigns every track one role:

- `test`: scored; nothing trained or tuned for the run has seen its labels;
- `tune`: the inner validation part: chooses smoothing, AU thresholds and anything else tuned;
- `train`: fits the encoder and the temporal models.

Run `fold_k` tests on fold k, tunes on fold (k + 1) mod K, trains on the rest. Run `official` tests on the
official Validation_Set, trains on Train_Set minus one group-wise K-th of it, which it tunes on; Train_Set
tracks that share a person or a video with a Validation_Set track sit the official run out.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.config import OFFICIAL_RUN, RUN_PATTERN

ROLES = ("train", "tune", "test")


def track_groups(tracks: pl.DataFrame) -> pl.DataFrame:
    """Give every track the group of its connected component over shared videos and subjects.

    Args:
        tracks: one row per track with columns `track`, `video`, `subject`.

    Returns:
        `tracks` with a string column `group`: the alphabetically first track name of the component,
        so the name is stable whatever the row order.
    """
    names = tracks["track"].to_list()
    parent = list(range(len(names)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for column in ("video", "subject"):
        first: dict[str, int] = {}
        for i, key in enumerate(tracks[column].to_list()):
            if key is None:
                continue
            union(first.setdefault(key, i), i)
    members: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        members.setdefault(find(i), []).append(name)
    group_of = {name: min(group) for group in members.values() for name in group}
    return tracks.with_columns(pl.Series("group", [group_of[n] for n in names], dtype=pl.String))


def assign_folds(tracks: pl.DataFrame, *, n_folds: int, seed: int) -> pl.DataFrame:
    """Give every track a fold so that no group spans two folds and folds hold similar frame counts.

    Args:
        tracks: one row per track with columns `track`, `video`, `subject`, `n_frames` (a `group` column,
            if present, is used as is).
        n_folds: number of folds (at most the number of groups).
        seed: shuffles groups before the greedy balancing, so ties break reproducibly.

    Returns:
        `tracks` with `group` and an int column `fold` in [0, n_folds).
    """
    if "group" not in tracks.columns:
        tracks = track_groups(tracks)
    groups = tracks.group_by("group").agg(pl.col("n_frames").sum()).sort("group")
    if groups.height < n_folds:
        raise ValueError(
            f"{groups.height} independent groups of tracks (videos / subjects) cannot fill {n_folds} folds"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(groups.height)
    # Largest groups first, each into the currently lightest fold (longest-processing-time rule).
    frames = groups["n_frames"].to_numpy()[order]
    order = order[np.argsort(-frames, kind="stable")]
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of_group: dict[str, int] = {}
    for i in order:
        fold = int(np.argmin(load))
        fold_of_group[groups["group"][int(i)]] = fold
        load[fold] += int(groups["n_frames"][int(i)])
    return tracks.with_columns(
        pl.col("group").replace_strict(fold_of_group, return_dtype=pl.Int32).alias("fold")
    )


def run_roles(folds: pl.DataFrame, run: str, *, n_folds: int, seed: int) -> pl.DataFrame:
    """Roles of every track in one run (see the module docstring).

    Args:
        folds: `assign_folds` output with a `split` column (Train_Set / Validation_Set).
        run: `fold_<k>` or `official`.

    Returns:
        One row per track taking part: run, track, role.
    """
    if match := RUN_PATTERN.match(run):
        test = int(match.group(1))
        tune = (test + 1) % n_folds
        role = (
            pl.when(pl.col("fold") == test)
            .then(pl.lit("test"))
            .when(pl.col("fold") == tune)
            .then(pl.lit("tune"))
            .otherwise(pl.lit("train"))
        )
        table = folds.select("track", role.alias("role"))
    elif run == OFFICIAL_RUN:
        test = folds.filter(pl.col("split") == "Validation_Set")
        # A Train_Set track whose person or video also appears in Validation_Set would train the model that
        # scores its partner: it sits this run out (the official test set stays complete).
        train = folds.filter(
            (pl.col("split") == "Train_Set") & ~pl.col("group").is_in(test["group"].implode())
        )
        if train.height == 0 or test.height == 0:
            raise ValueError("run 'official' needs Train_Set and Validation_Set tracks")
        if train["group"].n_unique() < 2:
            raise ValueError(
                "run 'official' needs at least 2 independent groups in Train_Set (train and tune)"
            )
        inner = assign_folds(train.drop("fold"), n_folds=min(n_folds, train["group"].n_unique()), seed=seed)
        tune = pl.when(pl.col("fold") == 0).then(pl.lit("tune")).otherwise(pl.lit("train"))
        table = pl.concat(
            [inner.select("track", tune.alias("role")), test.select("track", pl.lit("test").alias("role"))]
        )
    else:
        raise ValueError(f"unknown run '{run}' (expected fold_<k> or {OFFICIAL_RUN})")
    return table.select(pl.lit(run).alias("run"), "track", "role").sort("track")


def groups_split_across(folds: pl.DataFrame, roles: pl.DataFrame) -> list[str]:
    """Groups whose tracks have more than one role in a run (a leak); empty when the run is clean."""
    joined = roles.join(folds.select("track", "group"), on="track")
    spread = joined.group_by("run", "group").agg(pl.col("role").n_unique().alias("roles"))
    return spread.filter(pl.col("roles") > 1)["group"].to_list()


def run_tracks(roles: pl.DataFrame, run: str) -> dict[str, list[str]]:
    """role -> sorted track names of one run (from the folds stage's roles table)."""
    rows = roles.filter(pl.col("run") == run)
    if rows.height == 0:
        raise ValueError(
            f"no tracks for run '{run}' in the roles table (runs: {roles['run'].unique().to_list()})"
        )
    return {
        role: sorted(rows.filter(pl.col("role") == role)["track"].to_list())
        for role in ("train", "tune", "test")
    }
