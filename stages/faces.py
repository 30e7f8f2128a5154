"""Stage faces: detect, landmark and align the face of every track in every frame.

Videos are the jobs Prefect fans out (AFFECTFLOW_WORKERS processes); a two-person video is decoded
once for both its `_left` and `_right` tracks.
Outputs: <out>/<track>/table.parquet (one row per timeline frame), <out>/<track>/<view>.npy crops and
<out>/<track>/unit.json (the video's resume key), <out>/summary.parquet (per track: frames, faces, rate,
status).

Resumable (`pipeline.resume`; dvc.yaml marks the output `persist`, so DVC leaves it in place): each video
is a unit whose tracks are renamed into place only when complete, with a key over everything that
decides them (the video's content, the face params, its track names and frame count, the face code).
A rerun after a crash or a params change recomputes only the videos whose key differs and deletes
everything else that a fresh run would not write, so the output equals a fresh run's byte for byte.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts, resume
from pipeline.config import FacesConfig, load_config
from pipeline.faces.process import FaceConfig
from pipeline.flows import fan_out

# A track with a face in fewer than this share of its frames is flagged "partial": its features are
# mostly filled in from a few frames. One with no face at all is "faceless".
PARTIAL_RATE = 0.5
# The code whose changes invalidate every unit: the face modules and the decoder (pipeline.datasets.video).
FACE_CODE = ("pipeline.faces", "pipeline.datasets.video")


def face_config(params: FacesConfig) -> FaceConfig:
    return FaceConfig(
        detector=params.detector,
        detector_kwargs=dict(params.detector_kwargs),
        crop_size=params.crop_size,
        views=list(params.views),
    )


def video_key(video_path: Path, config: FaceConfig, tracks: list[str], n_frames: int, code: str) -> str:
    """The resume key of one video's unit (no path or time: two checkouts of one input agree)."""
    inputs: dict[str, Any] = {
        "video_sha256": resume.file_digest(video_path),
        "config": asdict(config),
        "tracks": tracks,
        "n_frames": n_frames,
        "code": code,
    }
    return resume.unit_key(inputs)


def unit_files(out_dir: Path, track: str, config: FaceConfig) -> list[Path]:
    """Files a committed track folder must hold."""
    return [artifacts.face_table(out_dir, track)] + [
        artifacts.face_crops(out_dir, track, view) for view in config.views
    ]


def track_status(faces: int, frames: int) -> str:
    """faceless (no face in any frame) | partial (a face in < PARTIAL_RATE of them) | ok."""
    if faces == 0:
        return "faceless"
    return "partial" if faces < PARTIAL_RATE * frames else "ok"


def summarize(tracks: pl.DataFrame, out_dir: Path) -> pl.DataFrame:
    """One row per track: track, frames, faces, rate, status; checks each table against the frames stage."""
    rows = []
    for row in tracks.iter_rows(named=True):
        table = pl.read_parquet(artifacts.face_table(out_dir, row["track"]))
        if table.height != row["n_frames"]:
            raise ValueError(
                f"{row['video_path']}: decoded {table.height} frames in faces but {row['n_frames']} in frames"
            )
        faces = int(table["has_face"].sum())
        rows.append(
            {
                "track": row["track"],
                "frames": table.height,
                "faces": faces,
                "rate": faces / table.height if table.height else 0.0,
                "status": track_status(faces, table.height),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "track": pl.String,
            "frames": pl.Int64,
            "faces": pl.Int64,
            "rate": pl.Float64,
            "status": pl.String,
        },
    )


def report(summary: pl.DataFrame) -> None:
    """Print the overall face rate and every track that is not ok, by name."""
    total = summary["faces"].sum() / max(1, summary["frames"].sum())
    print(f"faces: {summary['faces'].sum()} of {summary['frames'].sum()} frames have a face ({total:.1%})")
    for row in summary.filter(pl.col("status") == "faceless").iter_rows(named=True):
        print(
            f"WARNING: track {row['track']} has no face in any of its {row['frames']} frames (rate 0.0%): "
            "kept out of training; its frames get the documented fallback prediction"
        )
    for row in summary.filter(pl.col("status") == "partial").iter_rows(named=True):
        print(
            f"track {row['track']}: a face in only {row['faces']} of {row['frames']} frames "
            f"(rate {row['rate']:.1%} < {PARTIAL_RATE:.0%})"
        )


def run(root: Path, frames_dir: Path, out_dir: Path, params: FacesConfig) -> pl.DataFrame:
    tracks = pl.read_parquet(artifacts.tracks_table(frames_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    config = face_config(params)
    code = resume.source_fingerprint(*FACE_CODE)
    videos = tracks.group_by("video", maintain_order=True).agg("track", "video_path", "n_frames")

    # Everything a fresh run would not write goes: tracks no longer listed, leftovers of killed jobs.
    keep = {*tracks["track"], artifacts.faces_summary(out_dir).name}  # the summary is rewritten below
    removed = resume.prune(out_dir, keep)
    if removed:
        print(f"faces: removed {len(removed)} stale entries: {', '.join(removed)}")

    jobs, labels = [], []
    for row in videos.iter_rows(named=True):
        video_path = root / row["video_path"][0]
        key = video_key(video_path, config, row["track"], row["n_frames"][0], code)
        if all(resume.is_done(out_dir / t, key, unit_files(out_dir, t, config)) for t in row["track"]):
            continue
        jobs.append(
            {
                "video_path": video_path,
                "track_names": row["track"],
                "config": config,
                "out_root": out_dir,
                "unit_key": key,
            }
        )
        labels.append(row["video"])
    print(f"faces: {videos.height - len(jobs)} videos reused, {len(jobs)} computed")
    fan_out("pipeline.faces.process:process_video", jobs, name="faces", labels=labels)

    summary = summarize(tracks, out_dir)
    summary.write_parquet(artifacts.faces_summary(out_dir))
    report(summary)
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
