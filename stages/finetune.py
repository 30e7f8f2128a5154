"""Stage finetune@<run>: fine-tune the MAE-pretrained encoder on the run's training tracks only, one
encoder per view in `finetune.views`, by the recipe `finetune.recipe`.

The run's tune and test tracks never lend their labels to its encoders (the tune tracks are scored after
every epoch, for watching only). Outputs: <out>/<view>/encoder.pt and <out>/<view>/history.json.
Data-parallel on several GPUs under `torchrun --nproc_per_node N -m stages.finetune -- ARGS` (rank 0 writes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import FinetuneConfig, load_config
from pipeline.evaluation.folds import run_tracks
from pipeline.faces.crops import gather_crops
from pipeline.features.sequences import crop_targets, present_tasks
from pipeline.models.encoders import load_checkpoint, save_checkpoint
from pipeline.runtime import configure_torch
from pipeline.tasks.definitions import get_tasks
from pipeline.training import distributed
from pipeline.training.finetune import CHAIN_TASK, run_recipe
from pipeline.training.recipe_inputs import recipe_extras


def finetune_view(
    view: str, cfg: FinetuneConfig, tracks: dict[str, list[str]], args: argparse.Namespace, device: str
) -> None:
    """Fine-tune one view's encoder and write it under <out>/<view>/."""
    images, index = gather_crops(args.faces, tracks["train"], view, stride=cfg.frame_stride)
    faceless = sorted(set(tracks["train"]) - set(index["track"].to_list()))
    if faceless:
        print(f"finetune {args.run}: training track(s) without any face, nothing to learn from: {faceless}")
    label_tasks = get_tasks([*cfg.tasks, CHAIN_TASK] if cfg.recipe == "chain" else cfg.tasks)
    targets = crop_targets(index, args.frames, label_tasks)
    val_images, val_index = gather_crops(args.faces, tracks["tune"], view, stride=cfg.frame_stride)
    val_targets = crop_targets(val_index, args.frames, label_tasks)
    extra = recipe_extras(cfg.recipe, args.faces, index, cfg.frame_stride, device)
    val_extra = recipe_extras(cfg.recipe, args.faces, val_index, cfg.frame_stride, device)
    print(
        f"finetune {args.run} [{view}]: {len(images)} crops of {len(tracks['train'])} training tracks; "
        f"recipe {cfg.recipe}, tasks {list(cfg.tasks)}"
    )
    init = load_checkpoint(artifacts.encoder_checkpoint(args.pretrain))
    checkpoint, history = run_recipe(
        images,
        targets,
        cfg,
        init=init,
        device=device,
        val_images=val_images,
        val_targets=val_targets,
        extra=extra,
        val_extra=val_extra,
    )
    checkpoint["config"] |= {"run": args.run, "view": view}
    if distributed.is_main():  # under torchrun every process holds the same weights; one writes them
        path = artifacts.view_encoder(args.out, view)
        save_checkpoint(checkpoint, path)
        artifacts.history(path.parent).write_text(json.dumps(history, indent=1) + "\n")


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
    device = distributed.training_device(configure_torch())  # under torchrun: one process per GPU

    tracks = run_tracks(pl.read_parquet(artifacts.roles_table(args.splits)), args.run)
    tasks = present_tasks(args.frames, cfg.tasks, "finetune.tasks")
    cfg = dataclasses.replace(cfg, tasks=tuple(task.name for task in tasks))
    for view in cfg.views:
        finetune_view(view, cfg, tracks, args, device)
    distributed.finish()


if __name__ == "__main__":
    main()
