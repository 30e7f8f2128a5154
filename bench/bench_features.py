"""Feature extraction speed: the stage's whole path against the model alone and against a per-frame loop.

Side by side in one run, on this machine, with one encoder and one batch size (images/s; quote the ratios):
  (a) model only: forward passes of B preprocessed images already in memory;
  (b) the stage's path (`pipeline.features.cache`): build the encoder from its checkpoint, read the crops
      of every track from a faces folder, preprocess, forward, write each track's Parquet table;
  (c) the per-frame loop peers use: open one image file, preprocess it, forward it alone;
  (d) optional (--stage): `python -m stages.features` as a subprocess, process start-up included.
The crops are the demo's (data/faces, view --view) when present, else synthetic ones written to a temp
faces folder in the same layout. Each measurement is repeated --repeat times, interleaved, best kept.

Usage: python -m bench.bench_features [--faces data/faces] [--checkpoint encoder.pt] [--batch-size 128]
       [--per-frame 512] [--repeat 3] [--stage --run fold_0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml
from PIL import Image

import pipeline  # noqa: F401  (the torchvision shim, Prefect settings)
from pipeline import artifacts
from pipeline.evaluation.folds import run_tracks
from pipeline.faces.crops import track_crops
from pipeline.features.cache import TrackJob, extract_tracks, load_encoder, pool_features
from pipeline.inference.images import to_tensor_batch
from pipeline.models.encoders import create_encoder, encoder_kwargs, input_size, save_checkpoint
from pipeline.runtime import autocast, configure_torch

REPO = Path(__file__).resolve().parents[1]


def synthetic_faces(faces_dir: Path, view: str, tracks: int = 24, crops: int = 150, size: int = 112) -> None:
    """Random uint8 crops in the faces stage's layout (table.parquet + <view>.npy per track)."""
    rng = np.random.default_rng(0)
    for i in range(tracks):
        track = f"synthetic{i:03d}"
        n_frames = crops + crops // 10  # a few frames without a face
        has_face = np.zeros(n_frames, bool)
        has_face[rng.choice(n_frames, crops, replace=False)] = True
        artifacts.face_table(faces_dir, track).parent.mkdir(parents=True)
        pl.DataFrame({"frame": np.arange(n_frames), "has_face": has_face}).write_parquet(
            artifacts.face_table(faces_dir, track)
        )
        np.save(
            artifacts.face_crops(faces_dir, track, view),
            rng.integers(0, 256, (crops, size, size, 3), np.uint8),
        )


def face_tracks(faces_dir: Path, view: str) -> dict[str, int]:
    """track -> timeline frames, for every track of the faces folder that has crops of `view`."""
    tracks = {}
    for path in sorted(faces_dir.glob(f"*/{view}.npy")):
        tracks[path.parent.name] = pl.read_parquet(artifacts.face_table(faces_dir, path.parent.name)).height
    return tracks


def model_only(encoder: torch.nn.Module, images: torch.Tensor, batch: int, pool: str, device: str) -> float:
    """(a) seconds for forward passes over preprocessed images [N, 3, H, W] already in memory."""
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device):
        for i in range(0, len(images), batch):
            pool_features(encoder, images[i : i + batch], pool).float().cpu()
    return time.perf_counter() - start


def stage_path(
    checkpoint: Path,
    faces: Path,
    tracks: dict[str, int],
    view: str,
    args: argparse.Namespace,
) -> float:
    """(b) seconds for the stage's extraction, from the checkpoint and the faces folder to Parquet files."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        encoders = {view: load_encoder(checkpoint, args.device)}
        jobs = [TrackJob(track, n_frames, "bench") for track, n_frames in tracks.items()]
        extract_tracks(
            jobs,
            faces,
            encoders,
            Path(out),
            pool=args.pool,
            batch_size=args.batch_size,
            device=args.device,
        )
        return time.perf_counter() - start


def per_frame(encoder: torch.nn.Module, files: list[Path], pool: str, device: str) -> float:
    """(c) seconds for the per-frame loop: open one image file, preprocess it, forward it alone."""
    size = input_size(encoder)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device):
        for file in files:
            image = np.array(Image.open(file).convert("RGB"))
            x = to_tensor_batch(image[None], device, size=size)
            pool_features(encoder, x, pool).float().cpu()
    return time.perf_counter() - start


def stage_process(
    checkpoint: Path, faces: Path, view: str, args: argparse.Namespace, tmp: Path
) -> tuple[float, int]:
    """(d) wall seconds of `python -m stages.features` on the demo's run, and the crops it encoded."""
    finetune = tmp / "finetune"
    artifacts.view_encoder(finetune, view).parent.mkdir(parents=True)
    artifacts.view_encoder(finetune, view).write_bytes(checkpoint.read_bytes())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["features"] |= {"views": [view], "pool": args.pool, "batch_size": args.batch_size}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    roles = run_tracks(pl.read_parquet(artifacts.roles_table(args.splits)), args.run)
    images = sum(len(track_crops(faces, t, view)[0]) for tracks in roles.values() for t in tracks)
    command = [
        *(sys.executable, "-m", "stages.features", "--run", args.run, "--faces", str(faces)),
        *("--frames", str(args.frames), "--splits", str(args.splits), "--encoder", str(finetune)),
        *("--out", str(tmp / "features"), "--params", str(tmp / "params.yaml")),
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO / "data" / "faces")
    parser.add_argument("--view", default="eye_mouth")
    parser.add_argument("--checkpoint", type=Path, help="an encoder.pt (default: random vit_tiny_80)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pool", default="mean", choices=("mean", "cls"))
    parser.add_argument("--per-frame", type=int, default=512, help="images for the per-frame loop (c)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stage", action="store_true", help="also time python -m stages.features (d)")
    parser.add_argument("--run", default="fold_0")
    parser.add_argument("--frames", type=Path, default=REPO / "data" / "frames")
    parser.add_argument("--splits", type=Path, default=REPO / "data" / "splits")
    args = parser.parse_args()
    args.device = configure_torch()  # the stage's threads and device

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        faces = args.faces
        if not faces.is_dir() or not face_tracks(faces, args.view):
            faces = tmp / "faces"
            synthetic_faces(faces, args.view)
        tracks = face_tracks(faces, args.view)
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            kwargs = encoder_kwargs("vit_tiny_80")
            encoder = create_encoder("vit_tiny_80", **kwargs)
            checkpoint = tmp / "encoder.pt"
            save_checkpoint(
                {"model": encoder.state_dict(), "encoder": "vit_tiny_80", "encoder_kwargs": kwargs},
                checkpoint,
            )
        encoder = load_encoder(checkpoint, args.device)

        crops = np.concatenate([np.asarray(track_crops(faces, t, args.view)[1]) for t in tracks])
        images = to_tensor_batch(crops, args.device, size=input_size(encoder))
        files = []
        for i in range(min(args.per_frame, len(crops))):
            files.append(tmp / "frames" / f"{i:05d}.png")
            files[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(crops[i]).save(files[-1])
        n = len(crops)
        print(
            f"feature extraction on {len(tracks)} tracks, {n} {args.view} crops {crops.shape[1]}px "
            f"from {faces}; "
            f"encoder {checkpoint.name if args.checkpoint else 'random vit_tiny_80'} at "
            f"{input_size(encoder)[0]}px, pool {args.pool}, batch {args.batch_size}, device {args.device}, "
            f"{torch.get_num_threads()} torch threads"
        )
        model_only(encoder, images[: args.batch_size], args.batch_size, args.pool, args.device)  # warm-up
        best = {"a": np.inf, "b": np.inf, "c": np.inf}
        for _ in range(args.repeat):  # interleaved, so a busy spell on the shared CPU hits all alike
            best["a"] = min(best["a"], model_only(encoder, images, args.batch_size, args.pool, args.device))
            best["b"] = min(best["b"], stage_path(checkpoint, faces, tracks, args.view, args))
            best["c"] = min(best["c"], per_frame(encoder, files, args.pool, args.device))
        rate = {key: n / seconds for key, seconds in best.items()}
        rate["c"] = len(files) / best["c"]
        rows = [
            ("a", "model only, preloaded tensors", n),
            ("b", "stage path: build encoder, read, preprocess, forward, write", n),
            ("c", "per-frame loop: open image, preprocess, forward one", len(files)),
        ]
        if args.stage:
            seconds, count = stage_process(checkpoint, faces, args.view, args, tmp)
            rate["d"] = count / seconds
            rows.append(("d", f"python -m stages.features --run {args.run} (with start-up)", count))
        print(f"{'':3} {'path':<62} {'images':>7} {'images/s':>9}")
        for key, name, count in rows:
            print(f"{key:<3} {name:<62} {count:>7} {rate[key]:9.1f}")
        print(
            f"b/a {rate['b'] / rate['a']:.2f}x (target >= 0.9)   "
            f"b/c {rate['b'] / rate['c']:.2f}x (target >= 2.4)"
            + (f"   d/b {rate['d'] / rate['b']:.2f}x" if "d" in rate else "")
        )


if __name__ == "__main__":
    main()
