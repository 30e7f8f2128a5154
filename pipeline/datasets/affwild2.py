"""Read the Aff-Wild2 uni-task annotations (EXPR, AU, VA) and find the raw videos.

The layout is described in docs/FORMATS.md: one label file per person-track under
`<root>/<challenge dir>/{Train_Set,Validation_Set}/<track>.txt`, line 1 a header, line k+1 the label of
frame k (1-based). The demo corpus is written in the same layout, so this one reader serves both.

Labels are aligned to the video's frame *timeline* (0-based, `pipeline.datasets.video`), never to the
container's frame count: label row i is timeline frame i, whether or not that frame decoded. A label file
may be longer than the timeline (Aff-Wild2's files often have one extra last row) or shorter: up to
`frames.label_tolerance` rows either way is aligned and reported; more is an error (usually the wrong label
file is paired with the video) unless `frames.force_label_alignment` is set.

Extensions are matched in any case (`.MP4`, `.TXT`); `subjects.csv` is matched exactly.
"""

from __future__ import annotations

import difflib
import filecmp
import glob
import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.tasks.definitions import TASKS, Task, get_task

VIDEO_DIRS = ("batch1", "batch2", "batch3", "videos", "new_vids", ".")
# The organisers' aligned faces: <root>/cropped_aligned/<track>/<k:05d>.jpg.
CROPPED_ALIGNED = "cropped_aligned"
VIDEO_EXTS = (".mp4", ".avi")  # matched in any case
LABEL_EXT = ".txt"  # matched in any case
SPLITS = ("Train_Set", "Validation_Set")
AFFWILD2_TASKS = ("expr", "au", "va")  # the tasks with Aff-Wild2 annotation folders, in table order
TRACK_SUFFIXES = ("_left", "_right")  # two-person videos: one track per person, one shared video
SUBJECTS_FILE = "subjects.csv"
SUBJECTS_HEADER = ("track", "subject")
VA_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class Track:
    """One annotated person-track.

    Attributes:
        name: track name, the label file's stem (e.g. `video10_left`).
        video: the raw video's name: `name` with a `_left` / `_right` suffix stripped.
        split: "Train_Set" or "Validation_Set" (the same for every task of the track).
        label_files: task name -> label file, only for the tasks this track is annotated for.
        subject: grouping key for cross-validation folds (from subjects.csv, else the video name).
        subject_known: whether `subject` came from subjects.csv (False: it is only the video name).
    """

    name: str
    video: str
    split: str
    label_files: dict[str, Path]
    subject: str
    subject_known: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        """Names of the tasks this track has labels for, in `AFFWILD2_TASKS` order."""
        return tuple(t for t in AFFWILD2_TASKS if t in self.label_files)


class LabelCountError(ValueError):
    """A label file's row count is further from its video's timeline than `frames.label_tolerance`."""


@dataclass(frozen=True)
class AlignmentReport:
    """How one label file was matched to the frame timeline of its video.

    Attributes:
        n_labels: label rows in the file (header excluded).
        n_frames: frames on the video's timeline.
        dropped: label rows past the last timeline frame, discarded.
        padded: timeline frames without a label row, filled with the invalid marker.
        task: task name of the label file.
        label_file: the label file, when known.
        video: the video, when known.
        forced: the difference was beyond the tolerance and aligned only because alignment was forced.
    """

    n_labels: int
    n_frames: int
    dropped: int
    padded: int
    task: str = ""
    label_file: Path | None = None
    video: Path | None = None
    forced: bool = False

    @property
    def exact(self) -> bool:
        """True when the file has exactly one label row per timeline frame."""
        return self.dropped == 0 and self.padded == 0

    def message(self, track: Track | str) -> str:
        """One human-readable line describing the alignment of `track`'s labels."""
        name = track.name if isinstance(track, Track) else str(track)
        where = f"{name} [{self.task}]" if self.task else name
        counts = f"{self.n_labels} label rows, {self.n_frames} timeline frames"
        if self.dropped:
            line = f"{where}: {counts}: dropped the last {self.dropped} label row(s)"
        elif self.padded:
            line = f"{where}: {counts}: padded the last {self.padded} frame(s) as unlabelled"
        else:
            line = f"{where}: {counts}: aligned exactly"
        if self.forced:
            line = (
                f"WARNING: {line} (beyond frames.label_tolerance, aligned because "
                f"frames.force_label_alignment is true; label file {self.label_file}, video {self.video})"
            )
        return line


def video_name(track: str) -> str:
    """The raw video of a track: `<video>_left` / `<video>_right` -> `<video>`, other names unchanged."""
    for suffix in TRACK_SUFFIXES:
        if track.endswith(suffix) and len(track) > len(suffix):
            return track[: -len(suffix)]
    return track


def _annotation_dirs() -> list[str]:
    return [d for name in AFFWILD2_TASKS for d in get_task(name).challenge_dirs]


def _same_content(a: Path, b: Path) -> bool:
    # shallow=False compares bytes; it returns early when the sizes differ.
    return filecmp.cmp(a, b, shallow=False)


def _scan_task(root: Path, task: Task) -> dict[str, tuple[str, Path]]:
    """Label files of one task: track -> (split, path), merged over the task's challenge dirs.

    Raises:
        ValueError: a track appears in both splits, or twice in one split with different content.
    """
    found: dict[str, tuple[str, Path]] = {}
    for challenge_dir in task.challenge_dirs:  # first = preferred copy when two folders agree
        for split in SPLITS:
            split_dir = root / challenge_dir / split
            if not split_dir.is_dir():
                continue
            for path in sorted(split_dir.iterdir()):
                if path.suffix.lower() != LABEL_EXT or not path.is_file():  # `.TXT` is a label file too
                    continue
                if path.name.startswith("."):  # editor / macOS metadata files, not labels
                    continue
                track = path.stem
                if track not in found:
                    found[track] = (split, path)
                    continue
                other_split, other = found[track]
                if other_split != split:
                    raise ValueError(
                        f"track '{track}' is in {other_split} ({other}) and in {split} ({path}) "
                        f"for task {task.name}"
                    )
                if not _same_content(other, path):
                    raise ValueError(
                        f"track '{track}' ({split}) has two different {task.name} label files: "
                        f"{other} and {path}"
                    )
    return found


def read_subjects(path: Path, known_tracks: Collection[str] | None = None) -> dict[str, str]:
    """Read `subjects.csv`: header `track,subject`, one `<track>,<subject>` row per track.

    Blank lines are skipped; whitespace around fields is ignored.

    Args:
        path: the file.
        known_tracks: when given, the tracks that have label files: a row naming any other track is an
            error (a misspelt track would otherwise silently fall back to its video name, and one person
            could land in two folds).

    Raises:
        ValueError: wrong header, a row without exactly two non-empty fields, a track listed twice, or a
            track without label files (message gives file:line and, for the last, the closest real name).
    """
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or tuple(f.strip() for f in lines[0].split(",")) != SUBJECTS_HEADER:
        got = lines[0] if lines else "<empty file>"
        raise ValueError(f"{path}:1: expected header '{','.join(SUBJECTS_HEADER)}', got {got!r}")
    subjects: dict[str, str] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{path}:{lineno}: expected '<track>,<subject>', got {line!r}")
        track, subject = fields
        if track in subjects:
            raise ValueError(f"{path}:{lineno}: track '{track}' is listed twice")
        if known_tracks is not None and track not in known_tracks:
            close = difflib.get_close_matches(track, sorted(known_tracks), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "no track with label files has a close name"
            raise ValueError(
                f"{path}:{lineno}: track '{track}' has no label file under {path.parent} ({hint})"
            )
        subjects[track] = subject
    return subjects


def find_tracks(root: Path) -> list[Track]:
    """All annotated tracks under an Aff-Wild2 (or demo) root, sorted by name.

    Both EXPR folder names are read and merged. Tasks without any label file are simply absent from
    every track's `label_files` (the caller reports that).

    Args:
        root: dataset root holding the `*_Challenge` annotation folders and optionally `subjects.csv`.

    Returns:
        One `Track` per track name over all tasks.

    Raises:
        FileNotFoundError: none of the annotation folders exists under `root`.
        ValueError: a track is in Train_Set for one task and Validation_Set for another, two EXPR
            folders disagree about one track, or subjects.csv is malformed or names a track without
            label files.
    """
    root = Path(root)
    looked_for = _annotation_dirs()
    if not any((root / d).is_dir() for d in looked_for):
        raise FileNotFoundError(
            f"no Aff-Wild2 annotation folder under {root}: looked for {', '.join(looked_for)}"
        )

    splits: dict[str, tuple[str, str, Path]] = {}  # track -> (split, task, file) of its first task
    label_files: dict[str, dict[str, Path]] = {}
    for task_name in AFFWILD2_TASKS:
        for track, (split, path) in _scan_task(root, get_task(task_name)).items():
            if track in splits and splits[track][0] != split:
                first_split, first_task, first_path = splits[track]
                raise ValueError(
                    f"track '{track}' is in {first_split} for {first_task} ({first_path}) but in {split} "
                    f"for {task_name} ({path}); a track must be in one split for every task"
                )
            splits.setdefault(track, (split, task_name, path))
            label_files.setdefault(track, {})[task_name] = path

    subjects_path = root / SUBJECTS_FILE
    subjects = read_subjects(subjects_path, set(label_files)) if subjects_path.is_file() else {}

    tracks = []
    for name in sorted(label_files):
        video = video_name(name)
        tracks.append(
            Track(
                name=name,
                video=video,
                split=splits[name][0],
                label_files=label_files[name],
                # Default to the video so both people of a two-person video land in one fold.
                subject=subjects.get(name, video),
                subject_known=name in subjects,
            )
        )
    return tracks


def _any_case(ext: str) -> str:
    """Glob pattern matching `ext` in any letter case: '.mp4' -> '.[mM][pP]4'."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else glob.escape(c) for c in ext)


def find_video(root: Path, video: str) -> Path:
    """Locate the raw video `<video>.mp4|.avi` (extension in any case) in one of `VIDEO_DIRS` under `root`.

    Raises:
        FileNotFoundError: no candidate exists (message lists every path searched).
        ValueError: two different files match (identical copies are accepted; the first is returned).
    """
    root = Path(root)
    searched = [root / d / f"{video}{ext}" for d in VIDEO_DIRS for ext in VIDEO_EXTS]
    found = []
    for folder in VIDEO_DIRS:
        if not (root / folder).is_dir():
            continue
        for ext in VIDEO_EXTS:
            # glob.escape: video names may hold glob characters ('[', '*'); the stem must match exactly.
            pattern = glob.escape(video) + _any_case(ext)
            found += [p for p in sorted((root / folder).glob(pattern)) if p.is_file()]
    if not found:
        listing = ", ".join(str(p) for p in searched)
        raise FileNotFoundError(f"no video for '{video}'; searched (extension in any case): {listing}")
    first = found[0]
    for other in found[1:]:
        # The same bytes in two places (e.g. both the ABAW5 and ABAW6 folders unpacked) are harmless.
        if not (first.samefile(other) or _same_content(first, other)):
            raise ValueError(f"two different videos match '{video}': {first} and {other}")
    return first


def _expected(task: Task) -> str:
    invalid = _format_marker(task.invalid)
    if task.kind == "multiclass":
        return f"one integer class index 0..{task.num_outputs - 1}, or {invalid} for an unlabelled frame"
    if task.kind == "multilabel":
        return f"{task.num_outputs} comma-separated values, each 0 or 1, or {invalid} for an unlabelled frame"
    lo, hi = VA_RANGE
    return (
        f"{task.num_outputs} comma-separated numbers in [{lo:g}, {hi:g}], "
        f"or {invalid} for an unlabelled frame"
    )


def _format_marker(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _parse_row(fields: list[str], task: Task) -> list[float] | None:
    """Values of one label row, or None when the row is malformed. AU / VA rows with any invalid
    entry become all-invalid, so one marker test per row is enough downstream."""
    if len(fields) != len(task.columns):  # one class index for EXPR, one value per output otherwise
        return None
    if task.kind in ("multiclass", "multilabel"):
        try:
            values = [int(f) for f in fields]
        except ValueError:
            return None
        top = task.num_outputs if task.kind == "multiclass" else 2  # class index or 0/1
        if any(v != task.invalid and not 0 <= v < top for v in values):
            return None
    else:
        try:
            values = [float(f) for f in fields]
        except ValueError:
            return None
        lo, hi = VA_RANGE
        if any(not math.isfinite(v) or (v != task.invalid and not lo <= v <= hi) for v in values):
            return None
    if any(v == task.invalid for v in values):
        values = [task.invalid] * len(values)
    return values


def read_label_file(path: Path, task: Task) -> np.ndarray:
    """Read one Aff-Wild2 label file.

    The header must name the task's outputs in order (whitespace around names is tolerated, nothing
    else). Trailing empty lines are ignored; an empty line followed by more rows is an error because it
    would shift every later frame.

    Args:
        path: the label file.
        task: the task the file belongs to (`pipeline.tasks.definitions.TASKS`).

    Returns:
        Row i is the label of frame i (0-based) = line i + 2 of the file:
        EXPR int64 [N] in 0..7 or -1; AU int64 [N, 12] of 0/1 (all -1 for an invalid row);
        VA float32 [N, 2] in [-1, 1] (both -5 for an invalid row).

    Raises:
        ValueError: header mismatch or a malformed line (message: file, 1-based line number with the
            header as line 1, the offending text and what was expected).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: tolerate a BOM
    while lines and not lines[-1].strip():
        lines.pop()
    expected_header = ",".join(task.class_names)
    if not lines:
        raise ValueError(f"{path}:1: empty file, expected the {task.name} header '{expected_header}'")
    header = tuple(f.strip() for f in lines[0].split(","))
    if header != task.class_names:
        raise ValueError(
            f"{path}:1: header {lines[0]!r} does not match the {task.name} header '{expected_header}'"
        )

    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        values = _parse_row([f.strip() for f in line.split(",")], task)
        if values is None:
            raise ValueError(f"{path}:{lineno}: got {line!r}, expected {_expected(task)}")
        rows.append(values)

    if task.kind == "multiclass":
        return np.array([r[0] for r in rows], dtype=np.int64)
    dtype = np.int64 if task.kind == "multilabel" else np.float32
    return np.array(rows, dtype=dtype).reshape(len(rows), len(task.columns))


def align_labels(values: np.ndarray, n_frames: int, task: Task) -> tuple[np.ndarray, AlignmentReport]:
    """Match label rows to timeline frames: row i (file line i + 2) labels timeline frame i (0-based).

    Args:
        values: [N] or [N, C] labels from `read_label_file`.
        n_frames: the video's timeline length (`Timeline.n_frames`, not the container's count).
        task: the labels' task (for the invalid marker).

    Returns:
        The labels with exactly n_frames rows ([n_frames] or [n_frames, C], same dtype): extra rows at
        the end are dropped, missing rows are filled with the invalid marker; and the report.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    values = np.asarray(values)
    n_labels = len(values)
    if n_labels >= n_frames:
        aligned = values[:n_frames].copy()
    else:
        pad = np.full((n_frames - n_labels, *values.shape[1:]), task.invalid, dtype=values.dtype)
        aligned = np.concatenate([values, pad])
    report = AlignmentReport(
        n_labels=n_labels,
        n_frames=n_frames,
        dropped=max(0, n_labels - n_frames),
        padded=max(0, n_frames - n_labels),
        task=task.name,
    )
    return aligned, report


def _column_dtype(task: Task) -> pl.DataType:
    return pl.Float32 if task.kind == "regression" else pl.Int8


def check_label_count(
    report: AlignmentReport, label_file: Path, video: Path, *, tolerance: int, force: bool
) -> AlignmentReport:
    """Accept a label file whose row count is within `tolerance` of the timeline, else refuse it.

    A header-only file (0 rows) is always a mismatch: it labels nothing.

    Args:
        report: the alignment of `label_file` to `video`'s timeline (`align_labels`).
        label_file: the label file.
        video: the video it was paired with.
        tolerance: `frames.label_tolerance`, rows the counts may differ by.
        force: `frames.force_label_alignment`: align a bigger difference anyway (reported as a warning).

    Returns:
        The report with the files filled in, marked `forced` when the difference was beyond the tolerance.

    Raises:
        LabelCountError: a bigger difference (or no rows) without `force`; the message names both files,
            both counts and the ways out.
    """
    difference = abs(report.n_labels - report.n_frames)
    mismatch = difference > tolerance or (report.n_labels == 0 and report.n_frames > 0)
    report = replace(report, label_file=Path(label_file), video=Path(video), forced=mismatch and force)
    if mismatch and not force:
        rows = "no label rows (header only)" if report.n_labels == 0 else f"{report.n_labels} label rows"
        raise LabelCountError(
            f"{label_file} has {rows} but {video} has {report.n_frames} frames on its timeline "
            f"(a difference of {difference}, frames.label_tolerance is {tolerance}). Usually the wrong label "
            "file is paired with this video: pair the right file, or set frames.force_label_alignment: true "
            "in params.yaml to align anyway (extra rows dropped at the end, missing frames unlabelled)"
        )
    return report


def labels_table(
    track: Track, n_frames: int, video: Path, *, tolerance: int, force: bool
) -> tuple[pl.DataFrame, list[AlignmentReport]]:
    """Per-frame labels of one track, aligned to its video's frame timeline.

    Args:
        track: the track (from `find_tracks`).
        n_frames: timeline length of `track.video` (`Timeline.n_frames`).
        video: the video file (named in errors and reports).
        tolerance: `frames.label_tolerance` (see `check_label_count`).
        force: `frames.force_label_alignment` (see `check_label_count`).

    Returns:
        A table with n_frames rows: `frame` (int32, 0-based), `expr` (int8), the 12 AU columns of
        `tasks.AU_NAMES` (int8), `valence`, `arousal` (float32); tasks the track lacks hold their invalid
        markers (-1 / -5). And one `AlignmentReport` per label file the track has.

    Raises:
        LabelCountError: a label file's row count is too far from n_frames (unless `force`).
    """
    columns: dict[str, pl.Series] = {"frame": pl.Series("frame", np.arange(n_frames), dtype=pl.Int32)}
    reports = []
    for task_name in AFFWILD2_TASKS:
        task = TASKS[task_name]
        if task_name in track.label_files:
            label_file = track.label_files[task_name]
            values, report = align_labels(read_label_file(label_file, task), n_frames, task)
            reports.append(check_label_count(report, label_file, video, tolerance=tolerance, force=force))
        else:
            values = np.full((n_frames, len(task.columns)), task.invalid)
        values = values.reshape(n_frames, len(task.columns))
        for j, column in enumerate(task.columns):
            columns[column] = pl.Series(column, values[:, j], dtype=_column_dtype(task))
    return pl.DataFrame(list(columns.values())), reports


__all__ = [
    "AFFWILD2_TASKS",
    "SPLITS",
    "VIDEO_DIRS",
    "VIDEO_EXTS",
    "AlignmentReport",
    "LabelCountError",
    "Track",
    "align_labels",
    "check_label_count",
    "find_tracks",
    "find_video",
    "labels_table",
    "read_label_file",
    "read_subjects",
    "video_name",
]
