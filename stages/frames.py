"""Stage frames: decode each raw video once onto its frame timeline, align every track's labels to it.

Frames are numbered by the stream's time stamps (pipeline.datasets.video): a frame that does not decode
keeps its index as a missing frame, so labels stay on their frames; each such video is reported in one line.

Outputs (under --out):
    tracks.parquet            one row per track: track, video, dataset, root (its data.* root),
                              video_path (relative to root), split,
                              subject, subject_known, n_frames (timeline length), missing_frames (timeline
                              frames that did not decode), tasks (comma-separated tasks with labels)
    index/<video>.parquet     one row per timeline frame (pipeline.datasets.frames.index_video)
    labels/<track>.parquet    one row per timeline frame, every task's columns (pipeline.datasets.labels)

Resumable (`pipeline.resume`; the output is `persist` in dvc.yaml): decoding is the long part, so each
video's frame index is committed atomically with a key over the video's bytes and the decoding code; a
rerun after a crash decodes only the videos whose key differs. Labels and tracks.parquet are rebuilt each
time (cheap), and everything a fresh run would not write is deleted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from tqdm import tqdm

import pipeline  # noqa: F401
from pipeline import artifacts, resume
from pipeline.config import FramesConfig, load_config
from pipeline.datasets.affwild2 import CROPPED_ALIGNED, Track, labels_table, read_label_file
from pipeline.datasets.frames import index_video
from pipeline.datasets.labels import complete_labels
from pipeline.datasets.registry import Dataset, dataset_tracks
from pipeline.tasks.definitions import TASKS

# The code whose changes invalidate every frame index.
INDEX_CODE = ("pipeline.datasets.video", "pipeline.datasets.frames")


def video_index(video_path: Path, path: Path, code: str) -> tuple[pl.DataFrame, bool]:
    """The frame index of one video: reused from `path` when its key matches, else decoded and committed.

    Returns:
        (index, reused).
    """
    key = resume.unit_key({"video_sha256": resume.file_digest(video_path), "code": code})
    if resume.parquet_key(path) == key:
        return pl.read_parquet(path), True
    index, timeline = index_video(video_path)
    if timeline.n_decoded == 0:
        raise ValueError(f"{video_path}: no frame decodes")
    note = timeline.describe()
    if note:
        tqdm.write(note)
    resume.commit_parquet(index.to_arrow(), path, key)
    return index, False


def crops_only_track(root: Path, track: Track, out_dir: Path, config: FramesConfig) -> dict[str, object]:
    """A track whose raw video is absent but whose organisers' crops are there (`faces.source:
    cropped_aligned`): its timeline is max(label rows, last image number) (`organisers_frame_count`), and its
    labels are aligned to that, the same way as to a decoded video."""
    from pipeline.faces.organisers import organisers_frame_count

    crop_dir = root / CROPPED_ALIGNED / track.name
    rows = [len(read_label_file(path, TASKS[task])) for task, path in track.label_files.items()]
    n = organisers_frame_count(crop_dir, max(rows) if rows else None)
    tqdm.write(
        f"{track.name}: no raw video for '{track.video}'; {n} frames counted from its label rows and "
        f"{crop_dir} (the organisers' crops); run the faces stage with faces.source: cropped_aligned"
    )
    labels, reports = labels_table(
        track, n, crop_dir, tolerance=config.label_tolerance, force=config.force_label_alignment
    )
    for report in reports:
        if not report.exact:
            tqdm.write(report.message(track.name))
    complete_labels(labels).write_parquet(artifacts.labels_table(out_dir, track.name))
    return {
        "track": track.name,
        "video": track.video,
        "dataset": "affwild2",
        "root": str(root),
        "video_path": str(crop_dir.relative_to(root)),
        "split": track.split,
        "subject": track.subject,
        "subject_known": track.subject_known,
        "n_frames": n,
        "missing_frames": 0,
        "tasks": ",".join(sorted(track.label_files)),
    }


def run(
    root: Path | str,
    out_dir: Path,
    config: FramesConfig,
    compound_root: Path | str = "",
    mimicry_root: Path | str = "",
) -> pl.DataFrame:
    """Index every video and align every track's labels; `config` is params.yaml's `frames` section.

    Args:
        root: the Aff-Wild2-layout root (`data.root`; "" = none).
        compound_root, mimicry_root: the C-EXPR-DB and Hume-Vidmimic2 roots (`data.compound_root`,
            `data.mimicry_root`; "" = not used).

    Raises:
        LabelCountError: a label file is further from its video's timeline than `config.label_tolerance`
            (unless `config.force_label_alignment`).
    """
    roots = {"affwild2": str(root), "cexpr": str(compound_root), "mimicry": str(mimicry_root)}
    found = dataset_tracks(roots)
    if not found:
        raise ValueError(f"{', '.join(r for r in roots.values() if r)}: annotation files hold no track")
    tracks = [track for _, _, track in found]
    for task in TASKS.values():
        if task.derived_from:  # computed from other tasks' labels, never read from files
            continue
        n = sum(task.name in t.label_files for t in tracks)
        print(f"task {task.name}: {n} tracks labelled" if n else f"task {task.name}: no labels, skipped")

    by_video: dict[str, list[tuple[Dataset, Path, Track]]] = {}
    for dataset, data_root, track in found:
        by_video.setdefault(track.video, []).append((dataset, data_root, track))
    index_dir = artifacts.frame_index(out_dir, "any").parent
    index_dir.mkdir(parents=True, exist_ok=True)
    resume.prune(out_dir, {index_dir.name})  # labels and tracks.parquet are rebuilt below
    resume.prune(index_dir, {artifacts.frame_index(out_dir, video).name for video in by_video})
    artifacts.labels_table(out_dir, "any").parent.mkdir()
    code = resume.source_fingerprint(*INDEX_CODE)

    n_frames: dict[str, int] = {}
    n_missing: dict[str, int] = {}
    rows: dict[str, dict[str, object]] = {}
    reused = 0
    for video in tqdm(sorted(by_video), desc="frames", unit="video", disable=None):
        dataset, data_root, _ = by_video[video][0]
        try:
            video_path = dataset.find_video(data_root, video)
        except FileNotFoundError:
            crop_dirs = [data_root / CROPPED_ALIGNED / track.name for _, _, track in by_video[video]]
            if dataset.name != "affwild2" or not all(folder.is_dir() for folder in crop_dirs):
                raise
            for _, _, track in by_video[video]:
                rows[track.name] = crops_only_track(data_root, track, out_dir, config)
            n_frames[video] = max(int(rows[t.name]["n_frames"]) for _, _, t in by_video[video])
            n_missing[video] = 0
            continue
        index, was_reused = video_index(video_path, artifacts.frame_index(out_dir, video), code)
        reused += was_reused
        n_frames[video], n_missing[video] = index.height, int((~index["decoded"]).sum())

        # Labels right after their video: a mismatched label file stops the stage before the next decode.
        for _, _, track in by_video[video]:
            labels, reports = dataset.labels(
                data_root,
                track,
                n_frames[video],
                video_path,
                config.label_tolerance,
                config.force_label_alignment,
            )
            for report in reports:
                if not report.exact:
                    tqdm.write(report.message(track.name))
            labels.write_parquet(artifacts.labels_table(out_dir, track.name))
            rows[track.name] = {
                "track": track.name,
                "video": track.video,
                "dataset": dataset.name,
                "root": str(data_root),
                "video_path": str(video_path.relative_to(data_root)),
                "split": track.split,
                "subject": track.subject,
                "subject_known": track.subject_known,
                "n_frames": n_frames[video],
                "missing_frames": n_missing[video],
                "tasks": ",".join(sorted(track.label_files)),
            }
    table = pl.DataFrame([rows[track.name] for track in tracks])
    table.write_parquet(artifacts.tracks_table(out_dir))
    print(
        f"frames: {table.height} tracks, {len(n_frames)} videos ({reused} indexes reused), "
        f"{sum(n_frames.values())} timeline frames ({sum(n_missing.values())} did not decode)"
    )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="", help="Aff-Wild2-layout root (params: data.root)")
    parser.add_argument("--compound-root", default="", help="C-EXPR-DB root (data.compound_root)")
    parser.add_argument("--mimicry-root", default="", help="Hume-Vidmimic2 root (data.mimicry_root)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    config = load_config(args.params)  # a bad params.yaml fails here, at the first stage, not minutes later
    run(args.root, args.out, config.frames, args.compound_root, args.mimicry_root)


if __name__ == "__main__":
    main()
