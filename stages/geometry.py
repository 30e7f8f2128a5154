"""Stage geometry: every track's normalised 68-point landmarks as a feature table (one row per frame,
view `landmarks`), read by sequence models as one more stream (`pipeline.features.geometry`).

Needs no training, so one cache serves every run. Output: <out>/<track>.parquet.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl
from tqdm import tqdm

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.features.cache import write_feature_table
from pipeline.features.geometry import geometry_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    load_config(args.params)  # no knobs of its own, but a bad params.yaml fails here like everywhere
    tracks = pl.read_parquet(artifacts.tracks_table(args.frames)).select("track", "n_frames")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for track, n_frames in tqdm(tracks.iter_rows(), total=tracks.height, desc="geometry", unit="track"):
        table = geometry_table(args.faces, track)
        if table.num_rows != n_frames:
            raise ValueError(
                f"{artifacts.face_table(args.faces, track)}: {table.num_rows} frames, but the track's "
                f"timeline has {n_frames} ({artifacts.tracks_table(args.frames)}); rerun the faces stage"
            )
        write_feature_table(table, artifacts.feature_table(args.out, track), key="geometry")
    print(f"geometry: {tracks.height} tracks -> {args.out}")


if __name__ == "__main__":
    main()
