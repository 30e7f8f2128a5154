"""Stage faces: detect, landmark and align the face of every track in every decoded frame.

Videos are the jobs Prefect fans out (AFFECTFLOW_WORKERS processes); a two-person video is decoded
once for both its `_left` and `_right` tracks.
Outputs: <out>/<track>/table.parquet (one row per decoded frame) and <out>/<track>/<view>.npy crops,
<out>/summary.parquet (detection rate per track).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import FacesConfig, load_config
from pipeline.faces.process import FaceConfig
from pipeline.flows import fan_out


def face_config(params: FacesConfig) -> FaceConfig:
    return FaceConfig(
        detector=params.detector,
        detector_kwargs=dict(params.detector_kwargs),
        crop_size=params.crop_size,
        views=list(params.views),
    )


def run(root: Path, frames_dir: Path, out_dir: Path, params: FacesConfig) -> pl.DataFrame:
    tracks = pl.read_parquet(artifacts.tracks_table(frames_dir))
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    config = face_config(params)
    videos = tracks.group_by("video", maintain_order=True).agg("track", "video_path", "n_frames")
    jobs = [
        {
            "video_path": root / row["video_path"][0],
            "track_names": row["track"],
            "config": config,
            "out_root": out_dir,
        }
        for row in videos.iter_rows(named=True)
    ]
    fan_out("pipeline.faces.process:process_video", jobs, name="faces", labels=videos["video"].to_list())

    summary = []
    for row in tracks.iter_rows(named=True):
        table = pl.read_parquet(artifacts.face_table(out_dir, row["track"]))
        if table.height != row["n_frames"]:
            raise ValueError(
                f"{row['video_path']}: decoded {table.height} frames in faces but {row['n_frames']} in frames"
            )
        summary.append({"track": row["track"], "frames": table.height, "faces": int(table["has_face"].sum())})
    summary = pl.DataFrame(summary).with_columns((pl.col("faces") / pl.col("frames")).alias("rate"))
    summary.write_parquet(artifacts.faces_summary(out_dir))
    total = summary.select(pl.col("faces").sum() / pl.col("frames").sum()).item()
    print(f"faces: {summary['faces'].sum()} of {summary['frames'].sum()} frames have a face ({total:.1%})")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.root, args.frames, args.out, load_config(args.params).faces)


if __name__ == "__main__":
    main()
