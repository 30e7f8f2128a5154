"""The `affectflow` console script: it is installed, and `--help` lists what exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("stages", "tasks", "models", "config", "repro", "worker"):
        assert command in out


def test_commands_describe_the_project(capsys):
    assert main(["tasks"]) == 0
    assert "emi" in capsys.readouterr().out
    assert main(["stages"]) == 0
    assert "train@<run>" in capsys.readouterr().out
    assert main(["config", str(REPO / "params.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_config_command_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text((REPO / "params.yaml").read_text().replace("  seeds: [0, 1, 2]", "  seed: 0"))
    assert main(["config", str(bad)]) == 2
    assert "unknown key(s) seed in section 'train'" in capsys.readouterr().err


def test_a_worker_without_a_server_says_what_to_set(capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["worker", "--pool", "gpus"]) == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err


def test_the_installed_console_script_runs():
    script = shutil.which("affectflow") or str(Path(sys.executable).parent / "affectflow")
    if not Path(script).exists():
        pytest.skip("the package is not installed in this environment (make setup installs it)")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "stages" in result.stdout


def test_the_stage_list_is_the_dvc_pipeline():
    import yaml

    from pipeline.cli import STAGES

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = [name.split("@")[0] for name, _, _ in STAGES]
    assert listed == list(stages), "`affectflow stages` must list dvc.yaml's stages in order"
