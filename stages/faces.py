"""Stage faces: follow every person in every video and give each annotated track its person's faces.

Videos are the jobs Prefect fans out (AFFECTFLOW_WORKERS processes); a two-person video is decoded
once for both its `_left` and `_right` tracks (`pipeline.faces.process`).
Outputs: <out>/<track>/table.parquet (one row per timeline frame: `pipeline.faces.table`),
<out>/<track>/<view>.npy crops, <out>/<track>/persons.parquet (every person track of the video),
<out>/<track>/contact_sheet.png (sampled frames with boxes, ids, landmarks and views),
<out>/<track>/unit.json (the video's resume key), <out>/summary.parquet (per track: frames, decoded, faces
detected / tracked, filled, rejected by reason, persons, rate, status), and with --plot a CSV of the
rates for `dvc plots`.

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
from pipeline.datasets.affwild2 import CROPPED_ALIGNED
from pipeline.faces.organisers import OrganisersConfig, images_digest
from pipeline.faces.process import PERSONS_FILE, FaceConfig, face_config
from pipeline.flows import fan_out

# A track with a face in fewer than this share of its frames is flagged "partial": its features are
# mostly filled in from a few frames. One with no face at all is "faceless".
PARTIAL_RATE = 0.5
# Reasons a found face is rejected (pipeline.faces.quality), counted per track in the summary.
REJECTIONS = ("small", "landmarks", "corrupt", "blurred")
# The code whose changes invalidate every unit: the face modules and the decoder (pipeline.datasets.video).
FACE_CODE = ("pipeline.faces", "pipeline.datasets.video")


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


def unit_files(out_dir: Path, track: str, config: FaceConfig | OrganisersConfig) -> list[Path]:
    """Files a committed track folder must hold."""
    return [artifacts.face_table(out_dir, track)] + [
        artifacts.face_crops(out_dir, track, view) for view in config.views
    ]


def track_status(faces: int, frames: int) -> str:
    """faceless (no face in any frame) | partial (a face in < PARTIAL_RATE of them) | ok."""
    if faces == 0:
        return "faceless"
    return "partial" if faces < PARTIAL_RATE * frames else "ok"


SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "track": pl.String(),
    "video": pl.String(),
    "frames": pl.Int64(),  # timeline frames
    "decoded": pl.Int64(),  # frames that decoded
    "faces": pl.Int64(),  # frames with a usable face of the track's person
    "detected": pl.Int64(),  # ... found by the detector on that frame
    "tracked": pl.Int64(),  # ... carried by the tracker between detection frames
    "filled": pl.Int64(),  # frames standing in the nearest usable frame's crop
    "rejected": pl.Int64(),  # frames whose face was found but rejected (the reasons below)
    **{f"rejected_{reason}": pl.Int64() for reason in REJECTIONS},
    "persons": pl.Int64(),  # person tracks found in the video
    "person": pl.Int32(),  # the person track chosen for this track (null when none)
    "rate": pl.Float64(),  # faces / frames
    "status": pl.String(),  # ok | partial | faceless
}


def track_summary(table: pl.DataFrame, persons: pl.DataFrame | None, track: str, video: str) -> dict:
    """One summary row of a track's face table (`SUMMARY_SCHEMA`)."""
    frames = table.height
    faces = int(table["has_face"].sum())
    reasons = table["reason"].value_counts()
    count = dict(zip(reasons["reason"].to_list(), reasons["count"].to_list(), strict=True))
    origin = table.filter(pl.col("has_face"))["origin"].value_counts()
    origins = dict(zip(origin["origin"].to_list(), origin["count"].to_list(), strict=True))
    person = table.filter(pl.col("has_face"))["person"].drop_nulls()
    return {
        "track": track,
        "video": video,
        "frames": frames,
        "decoded": frames - count.get("undecoded", 0),
        "faces": faces,
        "detected": origins.get("detected", 0),
        "tracked": origins.get("tracked", 0),
        "filled": int((table["status"] == "filled").sum()),
        "rejected": sum(count.get(reason, 0) for reason in REJECTIONS),
        **{f"rejected_{reason}": count.get(reason, 0) for reason in REJECTIONS},
        "persons": 0 if persons is None else persons["person"].n_unique(),
        "person": int(person[0]) if len(person) else None,
        "rate": faces / frames if frames else 0.0,
        "status": track_status(faces, frames),
    }


def summarize(tracks: pl.DataFrame, out_dir: Path) -> pl.DataFrame:
    """One row per track (`SUMMARY_SCHEMA`); checks each table against the frames stage."""
    rows = []
    for row in tracks.iter_rows(named=True):
        folder = out_dir / row["track"]
        table = pl.read_parquet(artifacts.face_table(out_dir, row["track"]))
        if table.height != row["n_frames"]:
            raise ValueError(
                f"{row['video_path']}: decoded {table.height} frames in faces but {row['n_frames']} in frames"
            )
        persons_path = folder / PERSONS_FILE
        persons = pl.read_parquet(persons_path) if persons_path.is_file() else None
        rows.append(track_summary(table, persons, row["track"], row["video"]))
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA, orient="row")


def report(summary: pl.DataFrame) -> None:
    """Print the overall face rate, what happened to the frames without a face, and every track not ok."""
    total = summary["faces"].sum() / max(1, summary["frames"].sum())
    print(
        f"faces: {summary['faces'].sum()} of {summary['frames'].sum()} frames have a usable face "
        f"({total:.1%}): "
        f"{summary['detected'].sum()} detected, {summary['tracked'].sum()} tracked; "
        f"{summary['filled'].sum()} filled from a neighbour, "
        f"{summary['frames'].sum() - summary['decoded'].sum()} did not decode"
    )
    rejected = {reason: int(summary[f"rejected_{reason}"].sum()) for reason in REJECTIONS}
    if any(rejected.values()):
        print("faces rejected: " + ", ".join(f"{n} {reason}" for reason, n in rejected.items() if n))
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


def write_rate_plot(summary: pl.DataFrame, path: Path) -> None:
    """`dvc plots` data: the share of frames with a usable face, detected, tracked and filled, per track."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = pl.col("frames").clip(lower_bound=1)
    summary.select(
        "track",
        (pl.col("detected") / frames).round(4).alias("detected"),
        (pl.col("tracked") / frames).round(4).alias("tracked"),
        (pl.col("filled") / frames).round(4).alias("filled"),
        (pl.col("rejected") / frames).round(4).alias("rejected"),
        pl.col("rate").round(4).alias("rate"),
    ).write_csv(path)


def video_jobs(
    root: Path, videos: pl.DataFrame, out_dir: Path, config: FaceConfig, code: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One job per video whose unit is not done (`process_video` decodes it once for all its tracks)."""
    jobs, labels = [], []
    for row in videos.iter_rows(named=True):
        # Each track's own dataset root (Aff-Wild2, C-EXPR-DB, Hume-Vidmimic2; older tables: `root`).
        video_path = Path(row["root"][0] if "root" in row else root) / row["video_path"][0]
        if video_path.is_dir():
            raise ValueError(
                f"track(s) {', '.join(row['track'])} have no raw video, only the organisers' crops in "
                f"{video_path}: set faces.source: cropped_aligned in params.yaml"
            )
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
    return jobs, labels


def organisers_config(params: FacesConfig) -> OrganisersConfig:
    return OrganisersConfig(crop_size=params.crop_size, views=tuple(params.views))


def organisers_jobs(
    root: Path, tracks: pl.DataFrame, out_dir: Path, params: FacesConfig, code: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One job per track whose unit is not done, reading `<root>/cropped_aligned/<track>/`."""
    config = organisers_config(params)
    jobs, labels = [], []
    for row in tracks.iter_rows(named=True):
        track_dir = root / CROPPED_ALIGNED / row["track"]
        inputs = {
            "images": images_digest(track_dir),
            "config": asdict(config),
            "n_frames": row["n_frames"],
            "code": code,
        }
        key = resume.unit_key(inputs)
        if resume.is_done(out_dir / row["track"], key, unit_files(out_dir, row["track"], config)):
            continue
        jobs.append(
            {
                "track_dir": track_dir,
                "track": row["track"],
                "n_frames": row["n_frames"],
                "config": config,
                "out_root": out_dir,
                "key": key,
            }
        )
        labels.append(row["track"])
    return jobs, labels


def run(
    root: Path, frames_dir: Path, out_dir: Path, params: FacesConfig, plot: Path | None = None
) -> pl.DataFrame:
    tracks = pl.read_parquet(artifacts.tracks_table(frames_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    config = face_config(params)
    code = resume.source_fingerprint(*FACE_CODE)
    videos = tracks.group_by("video", maintain_order=True).agg(
        "track", "video_path", "n_frames", *(["root"] if "root" in tracks.columns else [])
    )

    # Everything a fresh run would not write goes: tracks no longer listed, leftovers of killed jobs.
    keep = {*tracks["track"], artifacts.faces_summary(out_dir).name}  # the summary is rewritten below
    removed = resume.prune(out_dir, keep)
    if removed:
        print(f"faces: removed {len(removed)} stale entries: {', '.join(removed)}")

    if params.source == "cropped_aligned":
        jobs, labels = organisers_jobs(root, tracks, out_dir, params, code)
        unit = "tracks"
        function = "pipeline.faces.organisers:process_organisers_track"
    else:
        jobs, labels = video_jobs(root, videos, out_dir, config, code)
        unit = "videos"
        function = "pipeline.faces.process:process_video"
    total = videos.height if params.source == "video" else tracks.height
    source = " (from cropped_aligned)" if params.source == "cropped_aligned" else ""
    print(f"faces: {total - len(jobs)} {unit} reused, {len(jobs)} computed{source}")
    fan_out(function, jobs, name="faces", labels=labels)

    summary = summarize(tracks, out_dir)
    summary.write_parquet(artifacts.faces_summary(out_dir))
    if plot is not None:
        write_rate_plot(summary, plot)
    report(summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None, help="CSV of face rates per track (dvc plots)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.root, args.frames, args.out, load_config(args.params).faces, args.plot)


if __name__ == "__main__":
    main()
