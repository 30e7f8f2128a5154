"""Read the Hume-Vidmimic2 emotional mimicry intensities (task "emi") and find its videos and audio.

Layout (the demo corpus writes the same one, `pipeline.demo.mimicry`):

    <root>/train_split.csv, valid_split.csv   header `Filename,Admiration,Amusement,Determination,
                                              Empathic Pain,Excitement,Joy`, then one row per video: its
                                              name and 6 intensities in [0, 1]
    <root>/raw/<name>.mp4|.avi|.webm|.mkv     the videos (extension in any case)
    <root>/audio/<name>.wav|.mp3              their audio tracks (extension in any case)
    <root>/subjects.csv                       optional, header `track,subject`, read like Aff-Wild2's

Rows of train_split.csv are "Train_Set" tracks, rows of valid_split.csv "Validation_Set" tracks; one track
per video ("emi" is a video-level task: one target per track). Blank lines are skipped; whitespace around
fields is ignored.
"""

from __future__ import annotations

import filecmp
import glob
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.datasets.affwild2 import SPLITS, SUBJECTS_FILE, Track, read_subjects
from pipeline.tasks.definitions import MIMICRY_NAMES, TASKS

TASK = TASKS["emi"]
SPLIT_FILES = {SPLITS[0]: "train_split.csv", SPLITS[1]: "valid_split.csv"}
HEADER = ("Filename", *MIMICRY_NAMES)
RAW_DIR = "raw"
AUDIO_DIR = "audio"
VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv")  # matched in any case
AUDIO_EXTS = (".wav", ".mp3")  # matched in any case


@dataclass(frozen=True)
class _Row:
    split: str
    path: Path
    line: int
    values: np.ndarray  # float32 [6]


def _any_case(ext: str) -> str:
    """Glob pattern matching `ext` in any letter case: '.mp4' -> '.[mM][pP]4'."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else glob.escape(c) for c in ext)


def _read_split_file(path: Path, split: str) -> list[tuple[str, _Row]]:
    """(name, row) per data line of one split file, in file order (duplicates are checked by the caller)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: tolerate a BOM
    expected = ",".join(HEADER)
    if not lines or tuple(f.strip() for f in lines[0].split(",")) != HEADER:
        got = repr(lines[0]) if lines else "an empty file"
        raise ValueError(f"{path}:1: expected the header '{expected}', got {got}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        values = _parse_values(fields[1:]) if len(fields) == len(HEADER) and fields[0] else None
        if values is None:
            raise ValueError(
                f"{path}:{lineno}: got {line!r}, expected '<video name>,' followed by {len(MIMICRY_NAMES)} "
                f"comma-separated numbers in [0, 1] ({', '.join(MIMICRY_NAMES)})"
            )
        rows.append((fields[0], _Row(split, path, lineno, values)))
    return rows


def _parse_values(fields: list[str]) -> np.ndarray | None:
    """float32 [6] intensities, or None when a field is not a finite number in [0, 1]."""
    try:
        values = [float(f) for f in fields]
    except ValueError:
        return None
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return None
    return np.array(values, np.float32)


def _read_rows(root: Path) -> dict[str, _Row]:
    """name -> row over both split files.

    Raises:
        FileNotFoundError: neither split file exists.
        ValueError: a malformed file, or a name listed twice (in one file or in both).
    """
    paths = {split: root / name for split, name in SPLIT_FILES.items()}
    if not any(p.is_file() for p in paths.values()):
        looked = ", ".join(str(p) for p in paths.values())
        raise FileNotFoundError(f"no Hume-Vidmimic2 split file under {root}: looked for {looked}")
    rows: dict[str, _Row] = {}
    for split, path in paths.items():
        if not path.is_file():
            continue
        for name, row in _read_split_file(path, split):
            if name in rows:
                first = rows[name]
                raise ValueError(
                    f"{path}:{row.line}: video '{name}' is listed twice (first at {first.path}:{first.line})"
                )
            rows[name] = row
    return rows


def read_intensities(root: Path | str) -> dict[str, np.ndarray]:
    """The 6 mimicry intensities of every video in train_split.csv and valid_split.csv.

    Returns:
        name -> float32 [6] in [0, 1] (`MIMICRY_NAMES` order = the "emi" task's label columns).

    Raises:
        FileNotFoundError: neither split file exists under `root` (message lists both).
        ValueError: wrong header (file, line 1 and the expected header), a malformed row (file, line number,
            the text and what was expected), or a video listed twice within or across the files.
    """
    return {name: row.values for name, row in _read_rows(Path(root)).items()}


def find_tracks(root: Path | str) -> list[Track]:
    """All Hume-Vidmimic2 videos listed in the split files, sorted by name.

    Returns:
        One `Track` per row: name = video = the Filename field, split "Train_Set" (train_split.csv) or
        "Validation_Set" (valid_split.csv), label_files {"emi": <that csv>}, subject from subjects.csv
        (else the video name).

    Raises:
        FileNotFoundError, ValueError: as `read_intensities`; also a malformed subjects.csv or one naming a
            video that no split file lists.
    """
    root = Path(root)
    rows = _read_rows(root)
    subjects_path = root / SUBJECTS_FILE
    subjects = read_subjects(subjects_path, set(rows)) if subjects_path.is_file() else {}
    return [
        Track(
            name=name,
            video=name,
            split=rows[name].split,
            label_files={"emi": rows[name].path},
            subject=subjects.get(name, name),
            subject_known=name in subjects,
        )
        for name in sorted(rows)
    ]


def _find(folder: Path, name: str, exts: tuple[str, ...], what: str) -> Path:
    found = []
    if folder.is_dir():
        for ext in exts:
            pattern = glob.escape(name) + _any_case(ext)  # the stem must match exactly
            found += [p for p in sorted(folder.glob(pattern)) if p.is_file()]
    if not found:
        searched = ", ".join(str(folder / f"{name}{ext}") for ext in exts)
        raise FileNotFoundError(f"no {what} for '{name}'; searched (extension in any case): {searched}")
    for other in found[1:]:
        if not (found[0].samefile(other) or filecmp.cmp(found[0], other, shallow=False)):
            raise ValueError(f"two different {what} files match '{name}': {found[0]} and {other}")
    return found[0]


def find_video(root: Path | str, name: str) -> Path:
    """Locate `raw/<name>.mp4|.avi|.webm|.mkv` (extension in any case).

    Raises:
        FileNotFoundError: no candidate exists (message lists every path searched).
        ValueError: two different files match (identical copies are accepted; the first is returned).
    """
    return _find(Path(root) / RAW_DIR, name, VIDEO_EXTS, "video")


def find_audio(root: Path | str, name: str) -> Path:
    """Locate `audio/<name>.wav|.mp3` (extension in any case); errors as `find_video`."""
    return _find(Path(root) / AUDIO_DIR, name, AUDIO_EXTS, "audio")


__all__ = [
    "AUDIO_DIR",
    "HEADER",
    "RAW_DIR",
    "SPLIT_FILES",
    "TASK",
    "find_audio",
    "find_tracks",
    "find_video",
    "read_intensities",
]
