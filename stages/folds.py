"""Stage folds: five subject-grouped folds over the train+validation tracks.

Output: <out>/folds.parquet (track, subject, split, n_frames, fold).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline.config import load_params
from pipeline.evaluation.folds import assign_folds


def run(frames_dir: Path, out_dir: Path, params: dict) -> pl.DataFrame:
    tracks = pl.read_parquet(frames_dir / "tracks.parquet").select("track", "subject", "split", "n_frames")
    folds = assign_folds(tracks, n_folds=params["n_folds"], seed=params["seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    folds.write_parquet(out_dir / "folds.parquet")
    summary = folds.group_by("fold").agg(
        pl.col("subject").n_unique().alias("subjects"), pl.len().alias("tracks"), pl.col("n_frames").sum()
    )
    print(summary.sort("fold"))
    return folds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.frames, args.out, load_params("folds", args.params))


if __name__ == "__main__":
    main()
