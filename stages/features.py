"""Stage features@<run>: each view's fine-tuned encoder of the run (frozen) over every face crop of every
track the run uses; Parquet per track, one row per (frame, view), so sequence models change without
re-extraction.

Input: --encoder models/finetune/<run>, holding one encoder per view (`artifacts.view_encoder`).
Output: <out>/<track>.parquet with columns frame, view, has_face, embedding (float16, null without a face);
see `pipeline.features.cache`.

One process: each view's encoder is built once, the crops of all tracks to extract stream through full
batches of features.batch_size, and each track's table is written as soon as its rows are complete. With
several GPUs, one such process per GPU (Prefect jobs), each on a shard of the tracks of about equal frames.

Resumable (`pipeline.resume`; the output is `persist` in dvc.yaml): each track's table carries a key over
every view's encoder bytes, the pooling, the track's face unit, the views and the feature code; a rerun
after a crash extracts only the tracks whose key differs and deletes everything a fresh run would not write.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts, resume
from pipeline.config import load_config
from pipeline.evaluation.folds import run_tracks
from pipeline.features.cache import (
    FEATURE_CODE,
    TrackJob,
    extract_shard,
    shard_jobs,
    track_key,
)
from pipeline.runtime import gpu_slots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folds.runs entry: fold_<k> or official")
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True, help="the run's fine-tune folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params).features

    roles = run_tracks(pl.read_parquet(artifacts.roles_table(args.splits)), args.run)
    names = sorted(track for tracks in roles.values() for track in tracks)
    n_frames = dict(
        pl.read_parquet(artifacts.tracks_table(args.frames)).select("track", "n_frames").iter_rows()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = {view: artifacts.view_encoder(args.encoder, view) for view in cfg.views}
    digests = {view: resume.file_digest(path) for view, path in checkpoints.items()}
    code = resume.source_fingerprint(*FEATURE_CODE)
    keys = {
        t: track_key(
            digests, resume.read_key(artifacts.face_table(args.faces, t).parent), n_frames[t], cfg.pool, code
        )
        for t in names
    }
    removed = resume.prune(args.out, {artifacts.feature_table(args.out, t).name for t in names})
    if removed:
        print(f"features {args.run}: removed {len(removed)} stale entries")
    todo = [t for t in names if resume.parquet_key(artifacts.feature_table(args.out, t)) != keys[t]]
    print(f"features {args.run}: {len(names) - len(todo)} tracks reused, {len(todo)} extracted")
    if not todo:
        return
    jobs = [TrackJob(t, n_frames[t], keys[t]) for t in todo]
    common = {"faces_dir": args.faces, "checkpoints": checkpoints, "out_dir": args.out}
    common |= {"pool": cfg.pool, "batch_size": cfg.batch_size}
    gpus = gpu_slots()
    if len(gpus) > 1 and len(jobs) > 1:  # a shard of the tracks per GPU, each in a job process of its own
        from pipeline.flows import fan_out  # Prefect: imported only when it schedules

        shards = shard_jobs(jobs, len(gpus))
        labels = [f"{args.run}-shard-{i}" for i in range(len(shards))]
        per_gpu = [{"jobs": shard, **common} for shard in shards]
        function = "pipeline.features.cache:extract_shard"
        rows = sum(fan_out(function, per_gpu, name=f"features-{args.run}", labels=labels, gpu=True))
    else:  # every track here, in this process (the same function as a GPU's shard), encoders built once
        rows = extract_shard(jobs, **common)
    print(f"features {args.run}: {rows} rows written ({len(todo)} tracks x {len(cfg.views)} views)")


if __name__ == "__main__":
    main()
