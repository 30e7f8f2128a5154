"""Stage finetune: fine-tune the MAE-pretrained encoder on frame labels (EXPR CE, AU BCE, VA 1-CCC).

Only tracks of the official splits named in `finetune.splits` (default Train_Set) lend their labels,
so Validation_Set tracks stay label-unseen by the encoder; the evaluate stage reports them apart.
Outputs (under --out): encoder.pt, history.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline.config import device, load_params
from pipeline.faces.crops import gather_crops
from pipeline.models.encoders import load_checkpoint, save_checkpoint
from pipeline.engine import finetune_encoder
from pipeline.tasks.definitions import get_task


def run(faces_dir: Path, frames_dir: Path, pretrain_dir: Path, out_dir: Path, params: dict) -> list[dict]:
    tracks = pl.read_parquet(frames_dir / "tracks.parquet")
    tasks = [get_task(name) for name in params["tasks"]]
    labelled = tracks.filter(pl.col("split").is_in(params["splits"]))
    held_out = tracks.filter(~pl.col("split").is_in(params["splits"]))
    if labelled.height == 0:
        raise ValueError(
            f"no tracks in splits {params['splits']} (have: {tracks['split'].unique().to_list()})"
        )

    def gather(table: pl.DataFrame, stride: int):
        return gather_crops(
            faces_dir,
            table["track"].to_list(),
            params["view"],
            stride=stride,
            labels_dir=frames_dir / "labels",
            tasks=tasks,
        )

    images, targets = gather(labelled, params["frame_stride"])
    val_images, val_targets = gather(held_out, params["frame_stride"]) if held_out.height else (None, None)
    print(f"finetune: {len(images)} labelled crops from {labelled.height} tracks; tasks {params['tasks']}")
    init = load_checkpoint(pretrain_dir / "encoder.pt")
    checkpoint, history = finetune_encoder(
        images,
        targets,
        tasks=params["tasks"],
        init=init,
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        layer_decay=params["layer_decay"],
        class_balance=params["class_balance"],
        warmup_epochs=params["warmup_epochs"],
        drop_path=params["drop_path"],
        seed=params["seed"],
        device=device(),
        val_images=val_images,
        val_targets=val_targets,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, out_dir / "encoder.pt")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--pretrain", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.faces, args.frames, args.pretrain, args.out, load_params("finetune", args.params))


if __name__ == "__main__":
    main()
