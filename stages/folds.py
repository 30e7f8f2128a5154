"""Stage folds: leak-free cross-validation folds and the roles (train / tune / test) of every run.

Outputs: <out>/folds.parquet (track, video, subject, group, split, n_frames, fold) and
<out>/roles.parquet (run, track, role), read by every per-run stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.evaluation.folds import assign_folds, groups_split_across, run_roles


def run(frames_dir: Path, out_dir: Path, config) -> pl.DataFrame:
    tracks = pl.read_parquet(artifacts.tracks_table(frames_dir))
    unknown = tracks.filter(~pl.col("subject_known"))
    if unknown.height:
        print(
            f"WARNING: {unknown.height} of {tracks.height} tracks have no subject in subjects.csv, so they "
            "are "
            "grouped by raw video only: two videos of one person can land in different folds and the scores "
            "will be optimistic. Give <data.root>/subjects.csv with a header 'track,subject' and one row per "
            "track (both tracks of a two-person video are joined automatically).",
            file=sys.stderr,
        )
    folds = assign_folds(
        tracks.select("track", "video", "subject", "split", "n_frames"),
        n_folds=config.folds.n_folds,
        seed=config.folds.seed,
    )
    roles = pl.concat(
        [
            run_roles(folds, name, n_folds=config.folds.n_folds, seed=config.folds.seed)
            for name in config.folds.runs
        ]
    )
    leaks = groups_split_across(folds, roles)
    if leaks:  # cannot happen by construction; checked because every number downstream relies on it
        raise RuntimeError(f"groups {leaks} have tracks in two roles of one run")
    for name in config.folds.runs:
        used = set(roles.filter(pl.col("run") == name)["track"])
        left_out = sorted(set(folds["track"]) - used)
        if left_out:
            print(
                f"{name}: {len(left_out)} Train_Set tracks share a person or video with Validation_Set and "
                "sit this "
                f"run out: {', '.join(left_out)}",
                file=sys.stderr,
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    folds.write_parquet(artifacts.folds_table(out_dir))
    roles.write_parquet(artifacts.roles_table(out_dir))
    summary = folds.group_by("fold").agg(
        pl.col("group").n_unique().alias("groups"),
        pl.col("subject").n_unique().alias("subjects"),
        pl.len().alias("tracks"),
        pl.col("n_frames").sum(),
    )
    print(summary.sort("fold"))
    print(roles.group_by("run", "role").agg(pl.len().alias("tracks")).sort("run", "role"))
    return folds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.frames, args.out, load_config(args.params))


if __name__ == "__main__":
    main()
