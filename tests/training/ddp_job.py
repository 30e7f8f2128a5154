"""A tiny fine-tuning run for `test_distributed`: `python -m tests.training.ddp_job OUT` in one process, or
under `torchrun --nproc_per_node 2` (gloo on the CPU); rank 0 saves the history and weights to OUT."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.config import load_config
from pipeline.training import distributed
from pipeline.training.finetune import finetune_encoder

REPO = Path(__file__).resolve().parents[2]


def problem(n: int = 32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """4 expression classes coded by colour, every frame labelled (so shard means average to the batch
    mean, as the data-parallel arithmetic assumes)."""
    rng = np.random.default_rng(0)
    expr = rng.integers(0, 4, n)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    images = np.clip(palette[expr][:, None, None, :] + rng.normal(0, 20, (n, 112, 112, 3)), 0, 255)
    return images.astype(np.uint8), {"expr": expr}


def main(out: Path) -> None:
    device = distributed.init_from_env() or "cpu"
    torch.set_num_threads(1)
    config = dataclasses.replace(
        load_config(REPO / "params.yaml").finetune,
        recipe="plain", tasks=("expr",), epochs=2, batch_size=8, lr=1e-3, weight_decay=0.05,
        layer_decay=0.75, warmup_epochs=0.5, drop_path=0.0, frozen_blocks=0, clip_grad=1.0,
        accumulation=1, ema_decay=0.0, class_balance=False, seed=0,
    )  # fmt: skip
    images, targets = problem()
    checkpoint, history = finetune_encoder(
        images, targets, config, init=None, encoder="vit_tiny_112", encoder_overrides={"depth": 1},
        device=device, augment=False,
    )  # fmt: skip
    if distributed.is_main():
        torch.save({"history": history, "model": checkpoint["model"], "heads": checkpoint["heads"]}, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
