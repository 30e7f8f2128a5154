"""Stage train@<run>: sequence models on the run's frozen features, one per seed in `train.seeds`.

Outputs (under --out): seed_<s>/model.pt and history.json; predictions.parquet on the run's tune and test
tracks (raw, unsmoothed). With several GPUs the seeds train at once, one per GPU (Prefect jobs).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pipeline  # noqa: F401
from pipeline.config import load_config
from pipeline.runtime import configure_torch
from pipeline.training.cv import train_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a folds.runs entry: fold_<k> or official")
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--geometry", type=Path, help="landmark geometry cache (train.views: landmarks)")
    parser.add_argument("--audio", type=Path, help="per-frame audio features (train.modalities: audio)")
    parser.add_argument("--text", type=Path, help="transcript embeddings (train.modalities: text)")
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params).train
    device = configure_torch()
    shutil.rmtree(args.out, ignore_errors=True)
    train_run(
        args.run,
        args.features,
        args.frames,
        args.splits,
        args.out,
        cfg,
        device,
        geometry_dir=args.geometry,
        audio_dir=args.audio,
        text_dir=args.text,
    )


if __name__ == "__main__":
    main()
