"""The datasets one pipeline run reads, each from its own root (params.yaml `data`): Aff-Wild2 (EXPR,
AU, VA), C-EXPR-DB (CE) and Hume-Vidmimic2 (EMI). Every reader gives `Track`s and per-frame labels in the
one label layout (`pipeline.datasets.labels`), so every stage after `frames` treats all tracks alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.datasets import affwild2, cexpr, mimicry
from pipeline.datasets.affwild2 import AlignmentReport, Track, align_labels, check_label_count
from pipeline.datasets.labels import complete_labels

Labels = Callable[[Path, Track, int, Path, int, bool], tuple[pl.DataFrame, list[AlignmentReport]]]


def _affwild2_labels(root, track, n_frames, video, tolerance, force):
    table, reports = affwild2.labels_table(track, n_frames, video, tolerance=tolerance, force=force)
    return complete_labels(table), reports


def _cexpr_labels(root, track, n_frames, video, tolerance, force):
    path = track.label_files["ce"]
    values, report = align_labels(cexpr.read_labels(path), n_frames, cexpr.TASK)
    report = check_label_count(report, path, video, tolerance=tolerance, force=force)
    table = pl.DataFrame({"frame": np.arange(n_frames, dtype=np.int32), "ce": values})
    return complete_labels(table), [report]


@functools.cache
def _intensities(root: Path) -> dict[str, np.ndarray]:
    """Both split files of a root, read once per process (not once per video: 12,660 rows each at scale)."""
    return mimicry.read_intensities(root)


def _mimicry_labels(root, track, n_frames, video, tolerance, force):
    # One row of intensities per video, stored on every frame (a video-level task, `Task.level`).
    values = _intensities(Path(root))[track.name]
    columns = {"frame": np.arange(n_frames, dtype=np.int32)}
    columns |= {
        column: np.full(n_frames, v, np.float32)
        for column, v in zip(mimicry.TASK.columns, values, strict=True)
    }
    return complete_labels(pl.DataFrame(columns)), []


@dataclass(frozen=True)
class Dataset:
    """One dataset layout: where its root comes from and how to read it."""

    name: str
    param: str  # the params.yaml key of its root
    find_tracks: Callable[[Path], list[Track]]
    find_video: Callable[[Path, str], Path]
    labels: Labels


DATASETS: dict[str, Dataset] = {
    "affwild2": Dataset("affwild2", "data.root", affwild2.find_tracks, affwild2.find_video, _affwild2_labels),
    "cexpr": Dataset("cexpr", "data.compound_root", cexpr.find_tracks, cexpr.find_video, _cexpr_labels),
    "mimicry": Dataset(
        "mimicry", "data.mimicry_root", mimicry.find_tracks, mimicry.find_video, _mimicry_labels
    ),
}


def dataset_tracks(roots: dict[str, str]) -> list[tuple[Dataset, Path, Track]]:
    """Every track of every dataset whose root is set ("" = not used), datasets in `DATASETS` order.

    Raises:
        ValueError: no root is set, or two datasets hold a track of the same name (names key every
            artifact downstream).
    """
    found: list[tuple[Dataset, Path, Track]] = []
    owner: dict[str, str] = {}
    for name, dataset in DATASETS.items():
        root = roots.get(name, "")
        if not root:
            continue
        for track in dataset.find_tracks(Path(root)):
            if track.name in owner:
                raise ValueError(
                    f"track '{track.name}' is in both {owner[track.name]} and {root} ({dataset.param}); "
                    "track names must be unique over the datasets of one run"
                )
            owner[track.name] = str(root)
            found.append((dataset, Path(root), track))
    if not roots or not any(roots.values()):
        raise ValueError(f"no dataset root is set ({', '.join(d.param for d in DATASETS.values())})")
    return found
