"""Names in params.yaml are checked against the registries before any work: the check stage and
`affectflow config` reject every kind of typo with the key named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main as cli_main
from pipeline.config import ConfigError, config_from_dict
from pipeline.validate import CHECKED_KEYS, check_registered
from stages import check

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def edited(section: str, key: str, value) -> dict:
    params = copy.deepcopy(PARAMS)
    params[section][key] = value
    return params


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("faces", "detector", "dlib", r"faces\.detector 'dlib' is unknown \(registered: .*dlib_hog"),
        (
            "faces",
            "detector_kwargs",
            {"upsampel": 1},
            r"faces\.detector_kwargs .*unexpected keyword.*upsampel",
        ),
        ("faces", "detector", "retinaface", r"for 'retinaface': .*unexpected keyword argument 'upsample'"),
        ("faces", "views", ["face", "eye_mouth", "eye_mouht"], r"faces\.views 'eye_mouht' is unknown"),
        ("pretrain", "encoder", "vit_tiny_81", r"pretrain\.encoder 'vit_tiny_81' is unknown"),
        (
            "pretrain",
            "init",
            "models/external/nowhere.pth",
            r"pretrain\.init 'models/external/nowhere\.pth' is not",
        ),
        ("train", "model", "tcn_tranformer", r"train\.model 'tcn_tranformer' is unknown"),
        ("train", "model_kwargs", {"hidden": 64, "heads": 5}, r"train\.model_kwargs .*divisible"),
        ("train", "model_kwargs", {"hiden": 64}, r"train\.model_kwargs .*unexpected keyword.*hiden"),
        ("train", "model_kwargs", {"hidden": -3}, r"train\.model_kwargs .*negative dimension"),
    ],
)
def test_registry_typos_are_named(section, key, value, message):
    config = config_from_dict(edited(section, key, value))
    with pytest.raises(ConfigError, match=message):
        check_registered(config)


def test_the_repo_params_pass_and_the_check_stage_writes_no_values(tmp_path):
    out = tmp_path / "params_check.json"
    check.main(["--out", str(out), "--params", str(REPO / "params.yaml")])
    assert json.loads(out.read_text()) == {"checked": list(CHECKED_KEYS)}
    # Another valid model gives the same output, so the frames stage downstream does not rerun.
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(edited("train", "model", "tcn")))
    before = out.read_bytes()
    check.main(["--out", str(out), "--params", str(params)])
    assert out.read_bytes() == before


def test_check_stage_and_cli_fail_on_a_typo(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(edited("train", "model", "tcnn")))
    with pytest.raises(ConfigError, match=r"train\.model 'tcnn'"):
        check.main(["--out", str(tmp_path / "out.json"), "--params", str(params)])
    assert not (tmp_path / "out.json").exists()
    assert cli_main(["config", str(params)]) == 2
    assert "train.model 'tcnn' is unknown" in capsys.readouterr().err


def test_the_frames_stage_depends_on_the_check():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    out = dvc["stages"]["check"]["outs"][0]
    assert out in dvc["stages"]["frames"]["deps"]
    params = set(dvc["stages"]["check"]["params"])
    assert set(CHECKED_KEYS) <= params
