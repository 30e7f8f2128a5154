"""Data-parallel training (`pipeline.training.distributed`): a fine-tune on two gloo processes under
torchrun follows the single-process run with the same global batch (losses and weights up to rounding)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def launch(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_gloo_processes_follow_one(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    launch([sys.executable, "-m", "tests.training.ddp_job", str(one)])
    launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "tests.training.ddp_job", str(two)])  # fmt: skip
    single, parallel = torch.load(one), torch.load(two)
    losses = [record["loss"] for record in single["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]  # it trains
    np.testing.assert_allclose([r["loss"] for r in parallel["history"]], losses, rtol=1e-4)
    for part in ("model", "heads"):
        for name, value in single[part].items():
            torch.testing.assert_close(parallel[part][name], value, rtol=1e-4, atol=1e-5, msg=name)
