"""Typed config: strict keys and types, cross-section checks, and dataclasses = params.yaml = dvc.yaml."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    SECTIONS,
    Config,
    ConfigError,
    SmoothingSpec,
    config_from_dict,
    load_config,
    section_keys,
)

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def edited(**changes) -> dict:
    """A deep copy of params.yaml with `section__key=value` edits (value None deletes the key)."""
    params = copy.deepcopy(PARAMS)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        if value is None:
            del params[section][key]
        else:
            params[section][key] = value
    return params


def test_repo_params_load_into_frozen_dataclasses():
    config = load_config(REPO / "params.yaml")
    assert isinstance(config, Config)
    assert config.folds.n_folds == 5 and "official" in config.folds.runs
    assert len(config.train.seeds) >= 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train__epoch": 3}, r"unknown key\(s\) epoch in section 'train'"),
        ({"finetune__lr": None}, r"section 'finetune' is missing key\(s\) lr"),
        ({"train__epochs": "30"}, r"train\.epochs: expected a whole number"),
        ({"train__epochs": 2.5}, r"train\.epochs: expected a whole number"),
        ({"pretrain__lr": "1e-3"}, r"pretrain\.lr: expected a number"),
        ({"train__track_features": True}, r"train\.track_features: expected text"),
        ({"train__track_features": "mean"}, r"train\.track_features must be raw, deviation or both"),
        ({"train__class_balance": "yes"}, r"train\.class_balance: expected true/false"),
        ({"train__views": "eye_mouth"}, r"train\.views: expected a list"),
        ({"train__tasks": ["expr", "vaa"]}, r"train\.tasks has unknown task 'vaa'"),
        ({"train__views": ["mouth"]}, r"train\.views has 'mouth', not in features\.views"),
        ({"features__views": ["face"]}, r"features\.views has 'face', but no encoder is fine-tuned on it"),
        ({"finetune__views": ["eyes"]}, r"finetune\.views has 'eyes', not produced by faces\.views"),
        ({"pretrain__views": []}, r"pretrain\.views is empty"),
        ({"finetune__recipe": "cotext"}, r"finetune\.recipe must be one of plain, cotex, emma, chain"),
        ({"features__pool": "max"}, r"features\.pool must be one of mean, cls"),
        ({"pretrain__init_layout": "keras"}, r"pretrain\.init_layout must be one of"),
        ({"pretrain__epochs": 0}, r"0 skips pretraining only with a pretrain\.init"),
        ({"finetune__colour_jitter": 0.4}, r"finetune\.colour_jitter change the images.*frozen_blocks to 0"),
        ({"finetune__cotex_mask_ratio": 0.99}, r"finetune\.cotex_mask_ratio must be"),
        ({"train__stride": 80}, r"need 1 <= train\.stride <= train\.window"),
        ({"train__seeds": []}, r"train\.seeds is empty"),
        ({"faces__crop_size": -5}, r"faces\.crop_size must be > 0"),
        (
            {"train__tasks": ["expr", "au"], "evaluate__tasks": ["ce"]},
            r"evaluate\.tasks has 'ce', not in train\.tasks",
        ),
        ({"smooth__candidates": {"expr": ["gaussian:-2"]}}, r"smooth\.candidates\.expr: 'gaussian:-2'"),
        ({"smooth__candidates": {"expr": ["window:2.5"]}}, r"whole number of frames"),
        ({"folds__runs": ["fold_0", "fold_1"]}, r"needs at least 3 folds"),
        ({"folds__runs": ["fold_0", "fold_2", "fold_3"]}, r"without gaps"),
        ({"folds__runs": ["fold_0", "fold_1", "fold_2", "test"]}, r"expected fold_<k> names"),
        ({"finetune__ema_decay": 1.0}, r"finetune\.ema_decay must be in \[0, 1\)"),
        ({"folds__runs": ["fold_0", "official"]}, r"needs at least 3 folds"),
        ({"frames__label_tolerance": -1}, r"frames\.label_tolerance must be >= 0"),
        ({"frames__force_label_alignment": "no"}, r"frames\.force_label_alignment: expected true/false"),
        ({"pretrain__frame_stride": 0}, r"pretrain\.frame_stride must be in \[1, inf\]"),
        ({"finetune__drop_path": 1.0}, r"finetune\.drop_path must be < 1"),
        ({"finetune__layer_decay": 0.0}, r"finetune\.layer_decay must be > 0"),
        ({"train__feature_noise": -0.1}, r"train\.feature_noise must be in \[0, inf\]"),
        ({"demo__val_share": 1.5}, r"demo\.val_share must be in \[0, 1\]"),
        ({"demo__fps_choices": [25, 0]}, r"demo\.fps_choices must list frame rates > 0"),
        ({"smooth__candidates": {"va": ["gaussian:-1.0"]}}, r"Gaussian sigma must be > 0"),
        ({"smooth__candidates": {"va": ["median:3"]}}, r"expected none, window:<frames> or gaussian"),
    ],
)
def test_bad_params_are_rejected_with_the_key_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(edited(**changes))


def test_unknown_and_missing_sections_are_named():
    params = copy.deepcopy(PARAMS)
    params["trian"] = params.pop("train")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) trian"):
        config_from_dict(params)
    del params["trian"]
    with pytest.raises(ConfigError, match=r"missing section\(s\) train"):
        config_from_dict(params)


def test_smoothing_specs_parse_and_print_back():
    assert SmoothingSpec.parse("none") == SmoothingSpec("none")
    assert SmoothingSpec.parse("window:25") == SmoothingSpec("window", 25.0)
    assert str(SmoothingSpec.parse("window:25")) == "window:25"
    assert str(SmoothingSpec.parse("gaussian:2.5")) == "gaussian:2.5"
    for bad in ("median:3", "window", "gaussian:0", "none:3"):
        with pytest.raises(ValueError):
            SmoothingSpec.parse(bad)


def _dvc_params() -> set[str]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    keys = set()
    for stage in dvc["stages"].values():
        body = stage.get("do", stage)
        keys |= set(body.get("params", []))
    return keys


def test_dataclass_fields_params_yaml_and_dvc_params_agree():
    fields = {f"{section}.{key}" for section, keys in section_keys().items() for key in keys}
    in_params = {f"{section}.{key}" for section, values in PARAMS.items() for key in values}
    assert fields == in_params, f"dataclasses vs params.yaml: {sorted(fields ^ in_params)}"
    assert set(SECTIONS) == set(PARAMS)
    listed = _dvc_params()
    assert listed <= fields, f"dvc.yaml lists params the dataclasses lack: {sorted(listed - fields)}"
    assert fields <= listed, (
        f"params no stage depends on (edits would not rerun anything): {sorted(fields - listed)}"
    )
