"""Stage features: run the fine-tuned encoder (frozen) over every face crop; cache Parquet per track.

Tracks are split into shards that Prefect runs in parallel (AFFECTFLOW_WORKERS; one per GPU at scale).
Output: <out>/<track>.parquet with columns frame, view, has_face, embedding (fixed-size list, null when
the frame has no face).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline.config import device, load_params, num_workers
from pipeline.flows import fan_out


def run(faces_dir: Path, frames_dir: Path, encoder_dir: Path, out_dir: Path, params: dict) -> int:
    tracks = pl.read_parquet(frames_dir / "tracks.parquet").sort("n_frames", descending=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    n_shards = min(num_workers(), tracks.height)
    # Longest tracks first, dealt round-robin, so shards end at about the same time.
    jobs = [
        {
            "tracks": tracks["track"][shard::n_shards].to_list(),
            "n_frames": tracks["n_frames"][shard::n_shards].to_list(),
            "views": params["views"],
            "faces_dir": str(faces_dir),
            "checkpoint": str(encoder_dir / "encoder.pt"),
            "out_dir": str(out_dir),
            "device": device(),
        }
        for shard in range(n_shards)
    ]
    rows = sum(
        fan_out(
            "pipeline.features.cache:extract_tracks",
            jobs,
            name="features",
            labels=[f"shard-{i}" for i in range(n_shards)],
        )
    )
    print(f"features: {rows} rows ({tracks.height} tracks x {len(params['views'])} views)")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.faces, args.frames, args.encoder, args.out, load_params("features", args.params))


if __name__ == "__main__":
    main()
