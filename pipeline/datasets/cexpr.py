"""Read the C-EXPR-DB compound-expression annotations (task "ce") and find its videos.

Layout (the demo corpus writes the same one, `pipeline.demo.compound`):

    <root>/videos/<video>.mp4|.avi     the videos (also accepted directly under <root>)
    <root>/annotations/<video>.txt     per-frame labels (also accepted in `annotation/`): line 1 the 7
                                       compound class names comma-separated (`COMPOUND_CLASSES` order),
                                       line k+1 the label of frame k (1-based): one class index 0..6, or -1
                                       for a frame without a compound expression (or no face, or unsure)
    <root>/subjects.csv                optional, header `track,subject`, read like Aff-Wild2's

C-EXPR-DB comes without a training split (ABAW's compound-expression track evaluates on it; models learn
from other data), so every video is a track in "Test_Set". Extensions are matched in any case.
"""

from __future__ import annotations

import filecmp
import glob
from pathlib import Path

import numpy as np

from pipeline.datasets.affwild2 import SUBJECTS_FILE, Track, read_label_file, read_subjects
from pipeline.tasks.definitions import TASKS

TASK = TASKS["ce"]
# Every C-EXPR-DB video: the challenge's compound-expression test set, without a training split. Folds
# cross-validate over it like any track; the official run (Train_Set -> Validation_Set) leaves it out, so a
# person's compound videos never pull their Aff-Wild2 tracks out of official training.
SPLIT = "Test_Set"
LABEL_DIRS = ("annotations", "annotation")  # first = preferred copy when both hold a file
VIDEO_DIRS = ("videos", ".")
VIDEO_EXTS = (".mp4", ".avi")  # matched in any case
LABEL_EXT = ".txt"  # matched in any case


def _any_case(ext: str) -> str:
    """Glob pattern matching `ext` in any letter case: '.mp4' -> '.[mM][pP]4'."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else glob.escape(c) for c in ext)


def find_tracks(root: Path | str) -> list[Track]:
    """All annotated C-EXPR-DB videos under `root`, sorted by name.

    Returns:
        One `Track` per label file: name = video = the file's stem, split "Test_Set",
        label_files {"ce": path}, subject from subjects.csv (else the video name).

    Raises:
        FileNotFoundError: neither annotation folder exists (message lists both).
        ValueError: `annotations/` and `annotation/` hold different files for one video, or subjects.csv
            is malformed or names a video without a label file.
    """
    root = Path(root)
    folders = [root / d for d in LABEL_DIRS]
    if not any(f.is_dir() for f in folders):
        raise FileNotFoundError(
            f"no C-EXPR-DB annotation folder under {root}: looked for {', '.join(str(f) for f in folders)}"
        )
    files: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() != LABEL_EXT or not path.is_file() or path.name.startswith("."):
                continue  # dot files are editor / macOS metadata, not labels
            other = files.setdefault(path.stem, path)
            if other != path and not filecmp.cmp(other, path, shallow=False):
                raise ValueError(f"video '{path.stem}' has two different label files: {other} and {path}")

    subjects_path = root / SUBJECTS_FILE
    subjects = read_subjects(subjects_path, set(files)) if subjects_path.is_file() else {}
    return [
        Track(
            name=name,
            video=name,
            split=SPLIT,
            label_files={"ce": files[name]},
            subject=subjects.get(name, name),
            subject_known=name in subjects,
        )
        for name in sorted(files)
    ]


def find_video(root: Path | str, video: str) -> Path:
    """Locate `<video>.mp4|.avi` (extension in any case) in `videos/` or directly under `root`.

    Raises:
        FileNotFoundError: no candidate exists (message lists every path searched).
        ValueError: two different files match (identical copies are accepted; the first is returned).
    """
    root = Path(root)
    found = []
    for folder in VIDEO_DIRS:
        if (root / folder).is_dir():
            for ext in VIDEO_EXTS:
                pattern = glob.escape(video) + _any_case(ext)  # the stem must match exactly
                found += [p for p in sorted((root / folder).glob(pattern)) if p.is_file()]
    if not found:
        searched = ", ".join(str(root / d / f"{video}{ext}") for d in VIDEO_DIRS for ext in VIDEO_EXTS)
        raise FileNotFoundError(f"no C-EXPR-DB video '{video}'; searched (extension in any case): {searched}")
    for other in found[1:]:
        if not (found[0].samefile(other) or filecmp.cmp(found[0], other, shallow=False)):
            raise ValueError(f"two different videos match '{video}': {found[0]} and {other}")
    return found[0]


def read_labels(path: Path | str) -> np.ndarray:
    """Read one C-EXPR-DB label file (the Aff-Wild2 label-file rules with the 7-class header).

    Returns:
        int64 [N]: row i is the class index (`COMPOUND_CLASSES`) of frame i (0-based) = line i + 2, or -1.

    Raises:
        ValueError: header mismatch or a malformed line (message: file, 1-based line number, the text and
            what was expected).
    """
    return read_label_file(Path(path), TASK)


__all__ = [
    "LABEL_DIRS",
    "SPLIT",
    "TASK",
    "VIDEO_DIRS",
    "VIDEO_EXTS",
    "find_tracks",
    "find_video",
    "read_labels",
]
