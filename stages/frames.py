"""Stage frames: decode each raw video once, index the decoded frames, align every track's labels to them.

Outputs (under --out):
    tracks.parquet            one row per track: track, video, video_path (relative to root), split,
                              subject, n_frames (decoded), tasks (comma-separated tasks with labels)
    index/<video>.parquet     one row per decoded frame (pipeline.datasets.frames.index_video)
    labels/<track>.parquet    one row per decoded frame (pipeline.datasets.affwild2.labels_table)
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
from pipeline.datasets.affwild2 import find_tracks, find_video, labels_table
from pipeline.datasets.frames import index_video
from pipeline.tasks.definitions import TASKS


def run(root: Path, out_dir: Path) -> pl.DataFrame:
    tracks = find_tracks(root)
    if not tracks:
        raise ValueError(f"{root}: annotation folders exist but hold no track files")
    for task in TASKS.values():
        n = sum(task.name in t.label_files for t in tracks)
        print(
            f"task {task.name}: {n} tracks labelled"
            if n
            else f"task {task.name}: no labels under {root}, skipped"
        )

    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "index").mkdir(parents=True)
    (out_dir / "labels").mkdir()

    n_frames: dict[str, int] = {}
    video_paths: dict[str, Path] = {}
    for video in tqdm(sorted({t.video for t in tracks}), desc="frames", unit="video", disable=None):
        video_paths[video] = find_video(root, video)
        index = index_video(video_paths[video])
        if index.height == 0:
            raise ValueError(f"{video_paths[video]}: no frame decodes")
        index.write_parquet(artifacts.frame_index(out_dir, video))
        n_frames[video] = index.height

    rows = []
    for track in tracks:
        labels, reports = labels_table(track, n_frames[track.video])
        for report in reports:
            if report.dropped or report.padded:
                print(report.message(track.name))
        labels.write_parquet(artifacts.labels_table(out_dir, track.name))
        rows.append(
            {
                "track": track.name,
                "video": track.video,
                "video_path": str(video_paths[track.video].relative_to(root)),
                "split": track.split,
                "subject": track.subject,
                "subject_known": track.subject_known,
                "n_frames": n_frames[track.video],
                "tasks": ",".join(sorted(track.label_files)),
            }
        )
    table = pl.DataFrame(rows)
    table.write_parquet(artifacts.tracks_table(out_dir))
    print(f"frames: {table.height} tracks, {len(n_frames)} videos, {sum(n_frames.values())} decoded frames")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="Aff-Wild2-layout root (params: data.root)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    load_config(args.params)  # a bad params.yaml fails here, at the first stage, not minutes later
    run(args.root, args.out)


if __name__ == "__main__":
    main()
