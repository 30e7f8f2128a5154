"""Stage pretrain: masked-autoencoder pretraining of the ViT face encoder on the aligned face crops.

Self-supervised (no labels), so it may see every track's faces, test tracks included. It starts from
random weights or from an external checkpoint (`pretrain.init`: MAE reference, MAE-Face, HF ViTMAE) and
can be skipped (`pretrain.epochs: 0` with an init). Resumable: the training state is saved after every
epoch under `.resume/` (outside DVC's outputs, keyed by the params and the crops) and removed on success.
Data-parallel on several GPUs under `torchrun --nproc_per_node N -m stages.pretrain -- ARGS` (rank 0 writes).

Outputs: <out>/encoder.pt (encoder weights + config, decoder under "mae"), <out>/history.json, and the
reconstruction figure (`--plot`, a `dvc plots` image): original | masked input | reconstruction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts, resume
from pipeline.config import ConfigError, PretrainConfig, load_config
from pipeline.faces.crops import gather_crops
from pipeline.models.encoders import registry_input_size, save_checkpoint
from pipeline.runtime import configure_torch
from pipeline.training import distributed
from pipeline.training.pretrain import pretrain_mae, reconstruction_preview

RESUME_DIR = Path(".resume")
PREVIEW_FACES = 8
PREVIEW_SCALE = 2  # patches stay visible: nearest-neighbour upscaling


def check_crop_size(crop_size: int, encoder: str) -> None:
    """Crops smaller than the encoder input would be upsampled: pixels invented, most likely a typo."""
    needed = registry_input_size(encoder)
    if crop_size < needed:
        raise ConfigError(
            f"params.yaml: faces.crop_size {crop_size} is smaller than the input of pretrain.encoder "
            f"'{encoder}' ({needed} px): raise faces.crop_size or pick a smaller encoder"
        )


def gather_views(faces: Path, tracks: list[str], cfg: PretrainConfig) -> np.ndarray:
    """uint8 [N, S, S, 3]: every `frame_stride`-th crop of each view in `pretrain.views`, pooled."""
    parts = [gather_crops(faces, tracks, view, stride=cfg.frame_stride)[0] for view in cfg.views]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def reconstruction_figure(checkpoint: dict, images: np.ndarray, device: str) -> np.ndarray:
    """BGR figure: a header, then one row per face (original | masked | reconstruction), upscaled."""
    if "mae" in checkpoint:
        grid = reconstruction_preview(checkpoint, images, device=device)  # RGB [n*S', 3*S', 3]
        titles = ("original", "masked input", "reconstruction")
    else:  # pretraining skipped: an imported encoder has no decoder to reconstruct with
        grid = np.concatenate(list(images), axis=0)
        titles = ("original (pretraining skipped: no decoder)",)
    grid = cv2.resize(grid, None, fx=PREVIEW_SCALE, fy=PREVIEW_SCALE, interpolation=cv2.INTER_NEAREST)
    panel = grid.shape[1] // len(titles)
    header = np.full((24, grid.shape[1], 3), 255, np.uint8)
    for i, title in enumerate(titles):
        origin = (i * panel + 4, 17)
        cv2.putText(header, title, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return cv2.cvtColor(np.concatenate([header, grid]), cv2.COLOR_RGB2BGR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, help="reconstruction figure (PNG) for `dvc plots`")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    config = load_config(args.params)
    cfg = config.pretrain
    check_crop_size(config.faces.crop_size, cfg.encoder)
    if cfg.init and not Path(cfg.init).is_file():
        raise ConfigError(f"params.yaml: pretrain.init '{cfg.init}' is not a file")
    device = distributed.training_device(configure_torch())  # under torchrun: one process per GPU

    tracks = pl.read_parquet(artifacts.tracks_table(args.frames))["track"].to_list()
    images = gather_views(args.faces, tracks, cfg)
    start = f"from {cfg.init}" if cfg.init else "from random weights"
    print(f"pretrain: {len(images)} crops of {len(tracks)} tracks (views {list(cfg.views)}), {start}")
    key = resume.unit_key(
        {
            "config": dataclasses.asdict(cfg),
            "images": len(images),
            "faces": resume.file_digest(artifacts.faces_summary(args.faces)),
        }
    )
    resume_path = RESUME_DIR / f"pretrain-{key[:16]}.pt"
    checkpoint, history = pretrain_mae(images, cfg, device=device, resume_path=resume_path)
    if distributed.is_main():  # under torchrun every process holds the same weights; one writes them
        write_outputs(checkpoint, history, images, device, args)
    distributed.finish()
    if distributed.is_main():
        resume_path.unlink(missing_ok=True)


def write_outputs(
    checkpoint: dict, history: list[dict], images: np.ndarray, device: str, args: argparse.Namespace
) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, artifacts.encoder_checkpoint(args.out))
    artifacts.history(args.out).write_text(json.dumps(history, indent=1) + "\n")
    preview = images[:: max(1, len(images) // PREVIEW_FACES)][:PREVIEW_FACES]
    figure = reconstruction_figure(checkpoint, preview, device)
    cv2.imwrite(str(args.out / artifacts.RECONSTRUCTION), figure)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.plot), figure)


if __name__ == "__main__":
    main()
