"""Stage features@<run>: the run's fine-tuned encoder (frozen) over every face crop of every track the
run uses; Parquet per track, one row per (frame, view), so sequence models change without re-extraction.

Output: <out>/<track>.parquet with columns frame, view, has_face, embedding (null without a face).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.evaluation.folds import run_tracks
from pipeline.features.cache import extract_tracks
from pipeline.runtime import configure_torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folds.runs entry: fold_<k> or official")
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params).features
    device = configure_torch()

    roles = run_tracks(pl.read_parquet(artifacts.roles_table(args.splits)), args.run)
    names = sorted(track for tracks in roles.values() for track in tracks)
    n_frames = dict(
        pl.read_parquet(artifacts.tracks_table(args.frames)).select("track", "n_frames").iter_rows()
    )
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows = extract_tracks(
        names,
        [n_frames[t] for t in names],
        list(cfg.views),
        str(args.faces),
        str(artifacts.encoder_checkpoint(args.encoder)),
        str(args.out),
        device=device,
    )
    print(f"features {args.run}: {rows} rows ({len(names)} tracks x {len(cfg.views)} views)")


if __name__ == "__main__":
    main()
