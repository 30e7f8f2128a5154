"""Encoder ablations on the demo corpus: what pretraining, fine-tuning and each recipe are worth.

    python -m bench.ablate_encoder                    # after `make demo` (needs data/ and models/pretrain)
    python -m bench.ablate_encoder --variants plain cotex --seeds 0 1 2

Each variant fine-tunes on the training tracks of one evaluation run (`--run`, default fold_0) and is
scored per frame on that run's tuning tracks (never its test tracks: defaults may be chosen on these
numbers), once per seed; the table gives mean +- sd over seeds. Scores: EXPR macro F1, AU mean F1
(threshold 0.5), VA mean CCC, and for the chain the six basic emotions' mean F1 (`basic`), all per frame,
without the temporal model or smoothing.

Encoders are compared with the same probe: linear heads trained on the frozen encoder (`frozen_blocks` =
depth); recipes are compared by their own predictions (CoTEX: the two ViTs averaged; EMMA: VA from the
score network). Results go to `--out` (JSON) and stdout (a Markdown table for the README).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.evaluation.folds import run_tracks
from pipeline.faces.crops import gather_crops
from pipeline.features.sequences import crop_targets
from pipeline.models.encoders import create_encoder, load_checkpoint
from pipeline.runtime import configure_torch
from pipeline.tasks.definitions import get_tasks
from pipeline.tasks.scores import monitor_scores
from pipeline.training.finetune import load_recipe_model, predict_images, run_recipe
from pipeline.training.recipe_inputs import recipe_extras

FULL = {"frozen_blocks": 0}  # full fine-tuning: the base of the image-augmentation recipes
# name -> (init: "mae" | "random", finetune overrides, view). "probe" variants freeze every block.
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "probe_random": ("random", {"frozen_blocks": -1}, "eye_mouth"),
    "probe_mae": ("mae", {"frozen_blocks": -1}, "eye_mouth"),
    "plain": ("mae", {}, "eye_mouth"),
    "plain_face": ("mae", {}, "face"),
    "full": ("mae", FULL, "eye_mouth"),
    "full_layer_decay": ("mae", FULL | {"layer_decay": 0.65}, "eye_mouth"),
    "full_ema": ("mae", FULL | {"ema_decay": 0.99}, "eye_mouth"),
    "full_crop_jitter": ("mae", FULL | {"crop_margin": 0.036, "colour_jitter": 0.4}, "eye_mouth"),
    "full_mixup_cutmix": ("mae", FULL | {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, "eye_mouth"),
    "cotex": ("mae", FULL | {"recipe": "cotex"}, "eye_mouth"),
    "emma": ("mae", {"recipe": "emma"}, "eye_mouth"),
    "basic_direct": ("mae", {"tasks": ("basic",)}, "eye_mouth"),
    "chain": ("mae", {"recipe": "chain", "tasks": ("au",)}, "eye_mouth"),
}
SCORED = ("expr_f1", "au_f1", "va_ccc", "basic_f1")


def predict_variant(name: str, seed: int, data: dict, init: dict, base, device: str) -> dict[str, np.ndarray]:
    start, changes, view = VARIANTS[name]
    changes = dict(changes)
    depth = int(init["encoder_kwargs"]["depth"])
    if changes.get("frozen_blocks") == -1:
        changes["frozen_blocks"] = depth
    cfg = dataclasses.replace(base, seed=seed, **changes)
    images, targets, extra, val_images, val_targets, val_extra = data[(view, cfg.recipe)]
    if start == "random":
        import torch

        torch.manual_seed(seed)  # a different random encoder per seed
        kwargs = dict(init["encoder_kwargs"])
        encoder = create_encoder(init["encoder"], **kwargs)
        start_ckpt = {"model": encoder.state_dict(), "encoder": init["encoder"], "encoder_kwargs": kwargs}
    else:
        start_ckpt = init
    checkpoint, _ = run_recipe(images, targets, cfg, init=start_ckpt, device=device, extra=extra)
    model = load_recipe_model(checkpoint, device)
    return predict_images(model, val_images, cfg.batch_size, device, val_extra)


def score(preds: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    return monitor_scores(get_tasks(list(preds)), preds, {k: targets[k] for k in preds})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run", default="fold_0")
    parser.add_argument("--faces", type=Path, default=Path("data/faces"))
    parser.add_argument("--frames", type=Path, default=Path("data/frames"))
    parser.add_argument("--splits", type=Path, default=Path("data/splits"))
    parser.add_argument("--pretrain", type=Path, default=Path("models/pretrain"))
    parser.add_argument("--out", type=Path, default=Path("bench/ablation.json"))
    args = parser.parse_args(argv)
    base = load_config().finetune
    device = configure_torch()
    tracks = run_tracks(pl.read_parquet(artifacts.roles_table(args.splits)), args.run)
    init = load_checkpoint(artifacts.encoder_checkpoint(args.pretrain))
    tasks = get_tasks(["expr", "au", "va", "basic"])

    data: dict = {}
    for name in args.variants:
        _, changes, view = VARIANTS[name]
        recipe = changes.get("recipe", base.recipe)
        if (view, recipe) in data:
            continue
        images, index = gather_crops(args.faces, tracks["train"], view, stride=base.frame_stride)
        val_images, val_index = gather_crops(args.faces, tracks["tune"], view, stride=base.frame_stride)
        data[(view, recipe)] = (
            images,
            crop_targets(index, args.frames, tasks),
            recipe_extras(recipe, args.faces, index, base.frame_stride, device),
            val_images,
            crop_targets(val_index, args.frames, tasks),
            recipe_extras(recipe, args.faces, val_index, base.frame_stride, device),
        )

    results: dict[str, list[dict[str, float]]] = {}
    predictions: dict[str, list[dict[str, np.ndarray]]] = {}
    for name in args.variants:
        predictions[name] = [predict_variant(name, seed, data, init, base, device) for seed in args.seeds]
        view, recipe = VARIANTS[name][2], VARIANTS[name][1].get("recipe", base.recipe)
        val_targets = data[(view, recipe)][4]
        results[name] = [score(p, val_targets) for p in predictions[name]]
        print(f"{name}: {summary(results[name])}", flush=True)
    if {"plain", "plain_face"} <= set(predictions):
        # Both views, fused late: the two views' fine-tuned models' probabilities averaged per frame (the
        # same frames: both views are cut from one aligned face).
        val_targets = data[("eye_mouth", base.recipe)][4]
        results["plain_both_views"] = [
            score({k: (a[k] + b[k]) / 2 for k in a}, val_targets)
            for a, b in zip(predictions["plain"], predictions["plain_face"], strict=True)
        ]
        print(f"plain_both_views: {summary(results['plain_both_views'])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": args.run, "seeds": args.seeds, "results": results}, indent=1))
    print(f"\nrun {args.run}, scored on its tuning tracks; mean +- sd over seeds {args.seeds}\n")
    print("| variant | " + " | ".join(SCORED) + " |")
    print("|---|" + "---|" * len(SCORED))
    for name, runs in results.items():
        print(f"| {name} | " + " | ".join(cell(runs, key) for key in SCORED) + " |")


def cell(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs if key in r]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def summary(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{key} {cell(runs, key)}" for key in SCORED if any(key in r for r in runs))


if __name__ == "__main__":
    main()
