"""Stage pretrain: masked-autoencoder pretraining of the ViT face encoder on the aligned face crops.

Self-supervised (no labels), so it may see every track's faces, test tracks included.
Outputs (under --out): encoder.pt (encoder weights + config), history.json, reconstruction.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import ConfigError, load_config
from pipeline.faces.crops import gather_crops
from pipeline.models.encoders import registry_input_size, save_checkpoint
from pipeline.runtime import configure_torch
from pipeline.training.pretrain import pretrain_mae, reconstruction_preview


def check_crop_size(crop_size: int, encoder: str) -> None:
    """Crops smaller than the encoder input would be upsampled: pixels invented, most likely a typo."""
    needed = registry_input_size(encoder)
    if crop_size < needed:
        raise ConfigError(
            f"params.yaml: faces.crop_size {crop_size} is smaller than the input of pretrain.encoder "
            f"'{encoder}' ({needed} px): raise faces.crop_size or pick a smaller encoder"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    config = load_config(args.params)
    cfg = config.pretrain
    check_crop_size(config.faces.crop_size, cfg.encoder)
    device = configure_torch()

    tracks = pl.read_parquet(artifacts.tracks_table(args.frames))["track"].to_list()
    images, _ = gather_crops(args.faces, tracks, cfg.view, stride=cfg.frame_stride)
    print(f"pretrain: {len(images)} crops from {len(tracks)} tracks (view {cfg.view})")
    checkpoint, history = pretrain_mae(images, cfg, device=device)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, artifacts.encoder_checkpoint(args.out))
    artifacts.history(args.out).write_text(json.dumps(history, indent=1) + "\n")
    grid = reconstruction_preview(checkpoint, images[:: max(1, len(images) // 8)][:8], device=device)
    cv2.imwrite(str(args.out / artifacts.RECONSTRUCTION), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
