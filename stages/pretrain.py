"""Stage pretrain: masked-autoencoder pretraining of the ViT face encoder on the aligned face crops.

Self-supervised (no labels), so it may see every track, validation included.
Outputs (under --out): encoder.pt (encoder weights + config), history.json, reconstruction.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import polars as pl

import pipeline  # noqa: F401
from pipeline.config import device, load_params
from pipeline.faces.crops import gather_crops
from pipeline.models.encoders import save_checkpoint
from pipeline.engine import pretrain_mae, reconstruction_preview


def run(faces_dir: Path, frames_dir: Path, out_dir: Path, params: dict) -> list[dict]:
    tracks = pl.read_parquet(frames_dir / "tracks.parquet")["track"].to_list()
    images, _ = gather_crops(faces_dir, tracks, params["view"], stride=params["frame_stride"])
    print(f"pretrain: {len(images)} crops from {len(tracks)} tracks (view {params['view']})")
    checkpoint, history = pretrain_mae(
        images,
        encoder=params["encoder"],
        mask_ratio=params["mask_ratio"],
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        warmup_epochs=params["warmup_epochs"],
        decoder_dim=params["decoder_dim"],
        decoder_depth=params["decoder_depth"],
        norm_pix_loss=params["norm_pix_loss"],
        seed=params["seed"],
        device=device(),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, out_dir / "encoder.pt")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    grid = reconstruction_preview(checkpoint, images[:: max(1, len(images) // 8)][:8], device=device())
    cv2.imwrite(str(out_dir / "reconstruction.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    run(args.faces, args.frames, args.out, load_params("pretrain", args.params))


if __name__ == "__main__":
    main()
