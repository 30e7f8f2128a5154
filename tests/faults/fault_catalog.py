"""The fault catalog: damaged copies of a small demo root, each with the behaviour the pipeline must show.

Every entry names one real-world fault (what labs meet in videos and annotations they did not make), how to
produce it from a clean Aff-Wild2-layout root, and the expected outcome: an error whose message names the
file (and line or frame), or a repair that is flagged where a person looks. `test_fault_suite.py` runs the
entries that the frames stage meets on a damaged copy; the others point to the test that covers them. The
README's fault table is rendered from this list (a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.datasets.affwild2 import find_tracks, find_video
from pipeline.datasets.video import iter_frames, probe


@dataclass(frozen=True)
class Fault:
    """One fault.

    Attributes:
        name: what is wrong, as a user would put it.
        behaviour: what the pipeline does about it (the README's right-hand column).
        damage: turns a clean root into the damaged one (None: the fault is produced inside its test).
        error: regex the frames stage's error must match (None: the stage must succeed).
        force: run with `frames.force_label_alignment: true`.
        checked_by: the test that covers an entry without `damage`.
        shorter: the damaged video's frame timeline ends earlier than the clean one's (truncation).
    """

    name: str
    behaviour: str
    damage: Callable[[Path], None] | None = None
    error: str | None = None
    force: bool = False
    checked_by: str = "tests/faults/test_fault_suite.py"
    shorter: bool = False


# ---- helpers that damage a root ---------------------------------------------------------------------------


def first_track(root: Path, split: str = "Train_Set"):
    return next(t for t in find_tracks(root) if t.split == split and not t.name.endswith(("_left", "_right")))


def reencode(root: Path, ext: str, fourcc: str) -> Path:
    """Rewrite the first track's video in another container / codec (same frames, size and rate)."""
    track = first_track(root)
    source = find_video(root, track.video)
    info = probe(source)
    frames = [rgb for _, rgb in iter_frames(source)]
    target = source.with_suffix(ext)
    writer = cv2.VideoWriter(
        str(target), cv2.VideoWriter_fourcc(*fourcc), info.fps, (info.width, info.height)
    )
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    if target != source:
        source.unlink()
    return target


def truncate(fraction: float, ext: str, fourcc: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        video = reencode(root, ext, fourcc)
        data = video.read_bytes()
        video.write_bytes(data[: int(len(data) * fraction)])

    return damage


def corrupt_middle(ext: str, fourcc: str) -> Callable[[Path], None]:
    """Overwrite 64 bytes in the middle of the file (inside one frame's compressed data)."""

    def damage(root: Path) -> None:
        video = reencode(root, ext, fourcc)
        data = bytearray(video.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8))
        video.write_bytes(bytes(data))

    return damage


def zero_byte_video(root: Path) -> None:
    find_video(root, first_track(root).video).write_bytes(b"")


def text_as_video(root: Path) -> None:
    find_video(root, first_track(root).video).write_text("this is not a video\n")


def upper_case_extensions(root: Path) -> None:
    track = first_track(root)
    video = find_video(root, track.video)
    video.rename(video.with_suffix(video.suffix.upper()))
    for path in track.label_files.values():
        path.rename(path.with_suffix(".TXT"))


def shift_labels(rows: int, task: str = "expr") -> Callable[[Path], None]:
    """Append (rows > 0) or remove (rows < 0) label rows at the end of the first track's file."""

    def damage(root: Path) -> None:
        path = first_track(root).label_files[task]
        lines = path.read_text().splitlines()
        if rows > 0:
            lines += [lines[-1]] * rows
        else:
            lines = lines[:rows]
        path.write_text("\n".join(lines) + "\n")

    return damage


def header_only(root: Path) -> None:
    path = first_track(root).label_files["au"]
    path.write_text(path.read_text().splitlines()[0] + "\n")


def blank_line_inside(root: Path) -> None:
    path = first_track(root).label_files["expr"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:10], "", *lines[10:]]) + "\n")


def conflicting_duplicate(root: Path) -> None:
    """The same track in both EXPR folder names, with different labels."""
    path = first_track(root).label_files["expr"]
    other = root / "EXPR_Classification_Challenge" / path.parent.name / path.name
    other.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines()
    lines[5] = "7" if lines[5].strip() != "7" else "6"
    other.write_text("\n".join(lines) + "\n")


def subjects_typo(root: Path) -> None:
    path = root / "subjects.csv"
    lines = path.read_text().splitlines()
    track, subject = lines[1].split(",")
    lines[1] = f"{track[:-1]}x,{subject}"
    path.write_text("\n".join(lines) + "\n")


def missing_video(root: Path) -> None:
    find_video(root, first_track(root).video).unlink()


FAULTS: tuple[Fault, ...] = (
    Fault(
        "video truncated at 60% (.mp4 mp4v)",
        "error naming the video (an .mp4's index sits at its end, so a cut file does not open)",
        truncate(0.6, ".mp4", "mp4v"),
        error=r"cannot open video .*\.mp4",
    ),
    Fault(
        "video truncated at 60% (.avi XVID)",
        "error naming the label file and the video, both counts, and `frames.force_label_alignment`",
        truncate(0.6, ".avi", "XVID"),
        error=r"label rows .*\.avi",
    ),
    Fault(
        "video truncated at 60% (.avi MJPG), forced",
        "with `frames.force_label_alignment: true`: a WARNING line; labels past the last frame dropped",
        truncate(0.6, ".avi", "MJPG"),
        force=True,
        shorter=True,
    ),
    Fault(
        "damaged bytes mid-stream (.avi MJPG)",
        "decoding goes on past the damage; every frame keeps its true index (from the stream's timestamps); "
        "an undecodable frame is flagged missing in the frame index and the stage's report",
        corrupt_middle(".avi", "MJPG"),
    ),
    Fault(
        "damaged bytes mid-stream (.avi XVID)",
        "as above",
        corrupt_middle(".avi", "XVID"),
    ),
    Fault(
        "damaged bytes mid-stream (.mp4 mp4v)",
        "as above",
        corrupt_middle(".mp4", "mp4v"),
    ),
    Fault("zero-byte video", "error naming the video file", zero_byte_video, error=r"\.(mp4|avi)"),
    Fault("text file named .mp4/.avi", "error naming the video file", text_as_video, error=r"\.(mp4|avi)"),
    Fault(
        "video missing", "error listing every path searched", missing_video, error=r"no video for .*searched"
    ),
    Fault(
        "upper-case .MP4 / .AVI / .TXT", "found (extensions match case-insensitively)", upper_case_extensions
    ),
    Fault(
        "label file 1 row too long",
        "accepted (Aff-Wild2's extra last line), one report line",
        shift_labels(1),
    ),
    Fault(
        "label file 50 rows too long",
        "error naming the label file and the video, both counts, and the way out",
        shift_labels(50),
        error=r"label rows",
    ),
    Fault(
        "label file 50 rows short",
        "error naming the label file and the video, both counts, and the way out",
        shift_labels(-50),
        error=r"label rows",
    ),
    Fault(
        "label file 50 rows short, forced",
        "with `frames.force_label_alignment: true`: a WARNING line; the missing frames are unlabelled",
        shift_labels(-50),
        force=True,
    ),
    Fault("header-only label file", "error naming the file: no label rows", header_only, error=r"\.txt"),
    Fault(
        "blank line inside a label file",
        "error naming file:line (it would shift every later frame)",
        blank_line_inside,
        error=r"\.txt:11: got ''",
    ),
    Fault(
        "one track in two EXPR folders with different labels",
        "error naming both files",
        conflicting_duplicate,
        error=r"two different expr label files",
    ),
    Fault(
        "misspelt track in subjects.csv",
        "error naming subjects.csv:line and the closest track name",
        subjects_typo,
        error=r"subjects\.csv:2",
    ),
    Fault(
        "data root path with a space",
        "works (every `dvc.yaml` command quotes `${data.root}`)",
        checked_by="tests/test_faults_e2e.py",
    ),
    Fault(
        "a track whose video never shows a face",
        "flagged `faceless` in data/faces/summary.parquet and named in the faces, finetune and train "
        "logs; kept out of training; every frame predicted with the run's training prior (`source` = prior)",
        checked_by="tests/test_faults_e2e.py",
    ),
    Fault(
        "a root without VA labels (or any task)",
        "`dvc repro` runs to the end; the absent task is noted in each stage's log and in "
        "`metrics/*.json` (`absent_tasks`); its plots are stand-ins that say why",
        checked_by="tests/test_faults_e2e.py",
    ),
    Fault(
        "NaN, inf or 1e30 in a feature table",
        "error naming the Parquet file, view, frame and column",
        checked_by="tests/features/test_feature_checks.py",
    ),
    Fault(
        "wrong feature width / missing column / duplicate frame",
        "error naming the file(s)",
        checked_by="tests/features/test_feature_checks.py",
    ),
    Fault(
        "non-finite predictions",
        "error naming the run, seed, track and frame (train) or the file (smooth, evaluate)",
        checked_by="tests/features/test_feature_checks.py",
    ),
    Fault(
        "a task without labelled test frames in some folds",
        "error naming the task and the runs (never a mean over fewer folds)",
        checked_by="tests/features/test_feature_checks.py",
    ),
    Fault(
        "typo in a task, view, detector, encoder, model or their arguments",
        "error naming params.yaml and the key, from the first stage (`check`) before any work",
        checked_by="tests/test_validate.py",
    ),
    Fault(
        "out-of-range param (crop size, sigma, folds, strides, shares...)",
        "error naming params.yaml and the key, from every stage's config load",
        checked_by="tests/test_config.py",
    ),
    Fault(
        "faces stage killed (SIGKILL) half-way",
        "no Prefect server or worker survives it; the rerun reuses the finished videos and redoes the rest",
        checked_by="tests/test_crash_safety.py",
    ),
    Fault(
        "frames or features stage rerun after a crash (a unit missing, leftovers in the folder)",
        "only the missing units are recomputed; leftovers are removed; the output equals a fresh run's",
        checked_by="tests/test_faults_e2e.py",
    ),
)


def fault_table() -> str:
    """The README's table of fault -> behaviour."""
    rows = ["| fault | behaviour | checked by |", "|---|---|---|"]
    rows += [f"| {f.name} | {f.behaviour} | `{f.checked_by}` |" for f in FAULTS]
    return "\n".join(rows)
