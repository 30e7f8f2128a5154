"""Params presets: every preset file yields valid params, and `-S` arguments say the same as the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.presets import PRESETS_DIR, apply_preset, flatten, load_preset, merge, set_arguments

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def test_the_seeds_and_the_cpu_user_have_presets():
    seeds = {"seed_000", "seed_001", "seed_001_cotex", "seed_002", "seed_003", "seed_004"}
    assert seeds | {"cpu"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_gives_valid_params_and_changes_what_it_says(name):
    merged = apply_preset(PARAMS, name)  # runs the config checks
    for key, value in flatten(load_preset(name)).items():
        node = merged
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    arguments = set_arguments(name)
    assert arguments[::2] == ["-S"] * (len(arguments) // 2)
    parsed = dict(a.split("=", 1) for a in arguments[1::2])
    assert {k: json.loads(v) for k, v in parsed.items()} == flatten(load_preset(name))


def test_merge_replaces_lists_and_merges_mappings():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert merge(base, {"a": {"y": [3]}}) == {"a": {"x": 1, "y": [3]}, "b": 2}
    assert base["a"]["y"] == [1, 2]  # not modified in place


def test_unknown_preset_and_bad_preset_are_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown preset 'seed_9'"):
        load_preset("seed_9")
    import pipeline.presets as presets

    (tmp_path / "typo.yaml").write_text("finetune:\n  recipes: cotex\n")
    monkeypatch.setattr(presets, "PRESETS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) recipes in section 'finetune'"):
        presets.apply_preset(PARAMS, "typo")
