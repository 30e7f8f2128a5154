"""Shared artifacts through a DVC folder remote, with the README's commands: one clone runs a pipeline and
pushes its outputs and run cache; another clone pulls and reruns nothing, also for a params value that was
run on the first machine at an earlier commit. The pipeline is a two-stage toy in a temporary git
repository (the real one takes the demo's hour); its stages count their runs in a file outside the
repository, so a rerun cannot hide."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DVC = [sys.executable, "-m", "dvc"]
STAGE = """import sys, pathlib
count = pathlib.Path(sys.argv[3]); count.write_text(count.read_text() + sys.argv[1] + "\\n")
import yaml
scale = yaml.safe_load(open("params.yaml"))["make"]["scale"]
source = pathlib.Path(sys.argv[1]); out = pathlib.Path(sys.argv[2])
out.write_text("".join(f"{scale * float(x)}\\n" for x in source.read_text().split()))
"""
PIPELINE = """stages:
  make:
    cmd: python stage.py data/raw.txt data/scaled.txt {runs}
    deps: [stage.py, data/raw.txt]
    params: [make.scale]
    outs: [data/scaled.txt]
  total:
    cmd: python stage.py data/scaled.txt data/total.txt {runs}
    deps: [stage.py, data/scaled.txt]
    params: [make.scale]
    outs: [data/total.txt]
"""


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def set_scale(repo: Path, scale: int) -> None:
    (repo / "params.yaml").write_text(f"make:\n  scale: {scale}\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_push_then_pull_in_another_clone_reruns_nothing(tmp_path):
    origin, remote, runs = tmp_path / "origin", tmp_path / "remote", tmp_path / "runs.txt"
    runs.write_text("")
    origin.mkdir()
    (origin / "data").mkdir()
    (origin / "data" / "raw.txt").write_text("1 2 3\n")
    (origin / "stage.py").write_text(STAGE)
    (origin / "dvc.yaml").write_text(PIPELINE.format(runs=runs))
    run(["git", "init", "-q", "-b", "main"], origin)
    run([*DVC, "init", "-q"], origin)
    run([*DVC, "config", "core.autostage", "true"], origin)
    run([*DVC, "remote", "add", "-d", "shared", str(remote)], origin)  # the README's set-up
    run([*DVC, "add", "-q", "data/raw.txt"], origin)
    set_scale(origin, 3)  # an earlier experiment, committed but not the head any more
    run([*DVC, "repro", "-q"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "scale 3"], origin)
    set_scale(origin, 2)
    run([*DVC, "repro", "-q"], origin)
    assert len(runs.read_text().split()) == 4  # two stages, twice
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "scale 2"], origin)
    # The run cache records stage runs; their outputs travel with --all-commits.
    run([*DVC, "push", "-q", "--run-cache", "--all-commits"], origin)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    run([*DVC, "pull", "-q", "--run-cache"], clone)
    assert (clone / "data" / "total.txt").read_text() == (origin / "data" / "total.txt").read_text()
    assert "up to date" in run([*DVC, "status"], clone)
    run([*DVC, "repro"], clone)
    set_scale(clone, 3)  # run on the other machine: restored from the run cache, its outputs pulled
    out = run([*DVC, "repro", "--pull"], clone)
    assert "skipping run" in out and "Running stage" not in out, out
    assert (clone / "data" / "scaled.txt").read_text() == "3.0\n6.0\n9.0\n"
    assert len(runs.read_text().split()) == 4  # nothing ran in the clone
