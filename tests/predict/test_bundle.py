"""Bundles: export -> load round trip, deterministic bytes, and a clear error for each way a bundle folder
can be unusable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.faces.process import face_config
from pipeline.predict.bundle import META_FILE, BundleError, export_bundle, load_bundle
from tests.predict.tiny_bundle import REPO, RUN, tiny_config, write_training_outputs


def test_a_bundle_loads_back_with_its_settings_and_models(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert [t.name for t in bundle.tasks] == ["expr", "au", "va", "ce", "emi"]
    assert bundle.runs == [RUN] and bundle.seeds == [0]
    assert bundle.face_config() == face_config(load_config(REPO / "params.yaml").faces)
    assert list(bundle.encoders(RUN)) == ["eye_mouth"]
    (model,) = bundle.sequence_models(RUN)
    assert [t.name for t in model.tasks] == ["expr", "au", "va", "basic", "emi"]
    assert bundle.meta["knobs"]["au"]["thresholds"] == [0.5] * 12
    assert bundle.describe()["metrics"]["expr"] == {
        "metric": "f1",
        "score": 0.3,
        "seed_sd": 0.01,
        "baseline": 0.1,
    }


def test_exporting_twice_writes_the_same_bytes(tmp_path, tiny_bundle):
    config = tiny_config()
    export_bundle(tmp_path / "again", config, **write_training_outputs(tmp_path, config))
    first = json.loads((tiny_bundle / META_FILE).read_text())
    again = json.loads((tmp_path / "again" / META_FILE).read_text())
    # Same settings and metrics; the model files differ only where their random weights do.
    assert {k: v for k, v in first.items() if k != "files"} == {
        k: v for k, v in again.items() if k != "files"
    }
    export_bundle(tmp_path / "third", config, **write_training_outputs(tmp_path / "x", config))
    assert (tmp_path / "third" / META_FILE).read_bytes() == (tmp_path / "again" / META_FILE).read_bytes()


def edited(tmp_path: Path, tiny_bundle: Path, change) -> Path:
    """A copy of the bundle with `change(meta, folder)` applied."""
    folder = tmp_path / "copy"
    shutil.copytree(tiny_bundle, folder)
    meta = json.loads((folder / META_FILE).read_text())
    change(meta, folder)
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def test_unusable_bundles_are_refused_with_the_reason(tmp_path, tiny_bundle):
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)

    def newer(meta, folder):
        meta["format_version"] = 99

    with pytest.raises(BundleError, match="format version 99.*reads up to 1"):
        load_bundle(edited(tmp_path / "a", tiny_bundle, newer))

    def unknown_task(meta, folder):
        meta["tasks"].append("gaze")

    with pytest.raises(BundleError, match=r"unknown task\(s\) \['gaze'\]"):
        load_bundle(edited(tmp_path / "b", tiny_bundle, unknown_task))

    def missing_file(meta, folder):
        (folder / "temporal" / RUN / "seed_0.pt").unlink()

    with pytest.raises(BundleError, match="temporal/fold_0/seed_0.pt is missing"):
        load_bundle(edited(tmp_path / "c", tiny_bundle, missing_file))

    def damaged_file(meta, folder):
        with open(folder / "encoders" / RUN / "eye_mouth.pt", "ab") as handle:
            handle.write(b"\0")

    with pytest.raises(BundleError, match="eye_mouth.pt differs from its recorded sha256"):
        load_bundle(edited(tmp_path / "d", tiny_bundle, damaged_file))

    def other_torch(meta, folder):
        meta["versions"]["torch"] = "1.0.0"

    bundle = load_bundle(edited(tmp_path / "e", tiny_bundle, other_torch))
    assert bundle.notes and "torch 1.0.0" in bundle.notes[0]  # a note, not a refusal
