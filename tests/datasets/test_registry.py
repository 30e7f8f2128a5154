"""Several dataset roots in one run: tracks from each reader, one label layout, unique names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets.labels import FILE_TASKS, complete_labels
from pipeline.datasets.registry import DATASETS, dataset_tracks
from pipeline.tasks.definitions import COMPOUND_CLASSES, MIMICRY_NAMES


def compound_root(root: Path, videos: list[str]) -> Path:
    for video in videos:
        path = root / "annotations" / f"{video}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(",".join(COMPOUND_CLASSES) + "\n0\n-1\n6\n")
    return root


def mimicry_root(root: Path, videos: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{v},0.1,0.2,0.3,0.4,0.5,0.6\n" for v in videos)
    (root / "train_split.csv").write_text("Filename," + ",".join(MIMICRY_NAMES) + "\n" + rows)
    (root / "valid_split.csv").write_text("Filename," + ",".join(MIMICRY_NAMES) + "\n")
    return root


def test_tracks_of_every_root_with_their_dataset(tmp_path: Path) -> None:
    roots = {
        "affwild2": "",
        "cexpr": str(compound_root(tmp_path / "ce", ["01", "02"])),
        "mimicry": str(mimicry_root(tmp_path / "emi", ["00001"])),
    }
    found = dataset_tracks(roots)
    assert [(d.name, t.name, t.split) for d, _, t in found] == [
        ("cexpr", "01", "Test_Set"),
        ("cexpr", "02", "Test_Set"),
        ("mimicry", "00001", "Train_Set"),
    ]
    dataset, root, track = found[2]
    table, reports = dataset.labels(root, track, 4, root / "raw" / "00001.mp4", 1, False)
    assert reports == [] and table.height == 4
    assert table["empathic_pain"].to_list() == pytest.approx([0.4] * 4)
    assert table.columns == complete_labels(table).columns  # the one layout
    dataset, root, track = found[0]
    table, reports = dataset.labels(root, track, 3, root / "videos" / "01.mp4", 1, False)
    assert table["ce"].to_list() == [0, -1, 6] and (table["expr"] == -1).all()


def test_a_name_in_two_datasets_and_no_root_are_errors(tmp_path: Path) -> None:
    roots = {
        "cexpr": str(compound_root(tmp_path / "ce", ["00001"])),
        "mimicry": str(mimicry_root(tmp_path / "emi", ["00001"])),
    }
    with pytest.raises(ValueError, match="'00001' is in both"):
        dataset_tracks(roots)
    with pytest.raises(ValueError, match="no dataset root is set"):
        dataset_tracks({"affwild2": "", "cexpr": ""})
    assert set(DATASETS) == {"affwild2", "cexpr", "mimicry"}


def test_complete_labels_fills_every_file_task_with_its_invalid_marker() -> None:
    import polars as pl

    table = complete_labels(pl.DataFrame({"frame": np.arange(3), "ce": [1, 2, -1]}))
    for task in FILE_TASKS:
        for column in task.columns:
            if column != "ce":
                assert (table[column] == task.invalid).all(), column
