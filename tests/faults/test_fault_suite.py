"""Run the frames stage on a damaged copy of a small demo root for every fault of the catalog that it meets,
and check the outcome: an error naming the file, or success with the repair flagged."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from fault_catalog import FAULTS, Fault, fault_table, first_track

from pipeline import artifacts
from stages import demo, frames

REPO = Path(__file__).resolve().parents[2]
TINY_DEMO = {
    "n_identities": 4,
    "videos_per_identity": 1,
    "two_person_videos": 0,
    "frames_per_video": 100,
    "task_drop_share": 0.0,
    "compound_videos": 0,  # the catalogued faults are Aff-Wild2's
    "mimicry_videos": 0,
}
STAGE_FAULTS = [fault for fault in FAULTS if fault.damage is not None]


def params_file(folder: Path, force: bool) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"].update(TINY_DEMO)
    params["frames"]["force_label_alignment"] = force
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    """A clean root and its frames stage's track table."""
    folder = tmp_path_factory.mktemp("clean")
    params = params_file(folder, force=False)
    demo.main(["--out", str(folder / "root"), "--params", str(params)])
    frames.main(["--root", str(folder / "root"), "--out", str(folder / "frames"), "--params", str(params)])
    return folder / "root", pl.read_parquet(artifacts.tracks_table(folder / "frames"))


@pytest.mark.slow
@pytest.mark.parametrize("fault", STAGE_FAULTS, ids=[f.name for f in STAGE_FAULTS])
def test_the_frames_stage_meets_each_fault_as_catalogued(fault: Fault, clean, tmp_path, capsys):
    clean_root, clean_tracks = clean
    root = tmp_path / "root"
    shutil.copytree(clean_root, root)
    damaged = first_track(root)
    fault.damage(root)
    args = [
        "--root",
        str(root),
        "--out",
        str(tmp_path / "frames"),
        "--params",
        str(params_file(tmp_path, fault.force)),
    ]
    if fault.error is not None:
        with pytest.raises((ValueError, OSError)) as caught:
            frames.main(args)
        message = str(caught.value)
        assert message and re.search(fault.error, message), message
        return
    frames.main(args)
    tracks = pl.read_parquet(artifacts.tracks_table(tmp_path / "frames"))
    assert tracks["track"].to_list() == clean_tracks["track"].to_list()  # nothing lost
    before = clean_tracks.filter(pl.col("track") == damaged.name)["n_frames"][0]
    after = tracks.filter(pl.col("track") == damaged.name)["n_frames"][0]
    assert (after < before) if fault.shorter else (after == before)
    if fault.force:
        assert "WARNING" in capsys.readouterr().out


def test_the_readme_lists_every_fault():
    assert fault_table() in (REPO / "README.md").read_text()
