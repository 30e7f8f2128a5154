"""Stage finetune@<run>: fine-tune the MAE-pretrained encoder on the run's training tracks only.

The run's tune and test tracks never lend their labels to its encoder (the tune tracks are scored after
every epoch, for watching only). Outputs (under --out): encoder.pt, history.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.evaluation.folds import run_tracks
from pipeline.faces.crops import gather_crops
from pipeline.features.sequences import crop_targets, present_tasks
from pipeline.models.encoders import load_checkpoint, save_checkpoint
from pipeline.runtime import configure_torch
from pipeline.training.finetune import finetune_encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folds.runs entry: fold_<k> or official")
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--pretrain", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params).finetune
    device = configure_torch()

    tracks = run_tracks(pl.read_parquet(artifacts.roles_table(args.splits)), args.run)
    tasks = present_tasks(args.frames, cfg.tasks, "finetune.tasks")
    cfg = dataclasses.replace(cfg, tasks=tuple(task.name for task in tasks))
    images, index = gather_crops(args.faces, tracks["train"], cfg.view, stride=cfg.frame_stride)
    faceless = sorted(set(tracks["train"]) - set(index["track"].to_list()))
    if faceless:
        print(f"finetune {args.run}: training track(s) without any face, nothing to learn from: {faceless}")
    targets = crop_targets(index, args.frames, tasks)
    val_images, val_index = gather_crops(args.faces, tracks["tune"], cfg.view, stride=cfg.frame_stride)
    val_targets = crop_targets(val_index, args.frames, tasks)
    print(
        f"finetune {args.run}: {len(images)} crops of {len(tracks['train'])} training tracks; "
        f"tasks {list(cfg.tasks)}"
    )
    init = load_checkpoint(artifacts.encoder_checkpoint(args.pretrain))
    checkpoint, history = finetune_encoder(
        images, targets, cfg, init=init, device=device, val_images=val_images, val_targets=val_targets
    )
    checkpoint["config"]["run"] = args.run
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, artifacts.encoder_checkpoint(args.out))
    artifacts.history(args.out).write_text(json.dumps(history, indent=1) + "\n")


if __name__ == "__main__":
    main()
