"""What each registered encoder costs on this machine, and what that means for full Aff-Wild2.

    python -m bench.bench_encoders                      # every registry entry, on this CPU
    python -m bench.bench_encoders --encoders vit_base_224 --device cuda

Per encoder, measured in one run: inference images/s (forward, batch `--batch`), MAE pretraining
images/s (75% masked, decoder 128 x 2, forward + backward + step), training images/s (forward + backward
+ AdamW step, full fine-tuning, batch `--train-batch`), and the same training step with the first 4 blocks
frozen and cached (`finetune.frozen_blocks: 4`, upper blocks only). Then the hours a CPU user pays on
full Aff-Wild2 (about 3M frames; `--frames`): one pretraining or fine-tuning epoch over every
`--stride`-th frame, and extracting features of every frame for one view.
"""

from __future__ import annotations

import argparse
import time

import torch

import pipeline  # noqa: F401
from pipeline.models.encoders import ENCODERS, create_encoder, input_size
from pipeline.models.mae import MaskedAutoencoder
from pipeline.models.split_vit import freeze_lower, lower_tokens, upper_features
from pipeline.runtime import configure_torch


def rate(fn, images_per_call: int, min_seconds: float) -> float:
    """images/s of fn() after one warm-up call, timed for at least min_seconds."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return calls * images_per_call / (time.perf_counter() - start)


def measure(name: str, batch: int, train_batch: int, device: str, min_seconds: float) -> dict[str, float]:
    torch.manual_seed(0)
    encoder = create_encoder(name, drop_path_rate=0.1).to(device)
    side = input_size(encoder)
    x = torch.randn(batch, 3, *side, device=device)
    xt = torch.randn(train_batch, 3, *side, device=device)

    @torch.inference_mode()
    def forward():
        encoder.eval()(x)

    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-4)

    def train_step():
        encoder.train()
        loss = encoder(xt).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    out = {
        "infer": rate(forward, batch, min_seconds),
        "train_full": rate(train_step, train_batch, min_seconds),
    }
    mae = MaskedAutoencoder(create_encoder(name), decoder_dim=128, decoder_depth=2).to(device)
    mae_optimizer = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=1e-4)

    def pretrain_step():
        loss, _, _ = mae.train()(xt)
        loss.backward()
        mae_optimizer.step()
        mae_optimizer.zero_grad(set_to_none=True)

    out["pretrain"] = rate(pretrain_step, train_batch, min_seconds)
    frozen = min(4, len(encoder.blocks) - 1)
    freeze_lower(encoder, frozen)
    tokens = lower_tokens(encoder, xt, frozen)
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-4)

    def train_upper():
        encoder.train()
        loss = upper_features(encoder, tokens, frozen).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    out["train_frozen4"] = rate(train_upper, train_batch, min_seconds)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seconds", type=float, default=4.0, help="least timing per measurement")
    parser.add_argument("--frames", type=float, default=3.0e6, help="frames of the data set to size")
    parser.add_argument("--stride", type=int, default=10, help="fine-tuning uses every n-th frame")
    args = parser.parse_args(argv)
    device = args.device or configure_torch()
    print(f"device {device}, {torch.get_num_threads()} threads; images/s (higher is better)")
    header = f"{'encoder':15s} {'infer':>8s} {'pretrain':>9s} {'train full':>11s} {'train top':>10s} "
    print(header + f"{'h/ep MAE':>9s} {'h/ep full':>10s} {'h/ep top':>9s} {'h extract':>10s}")
    train_images = args.frames / args.stride
    for name in args.encoders:
        r = measure(name, args.batch, args.train_batch, device, args.seconds)
        hours = [train_images / r[k] / 3600 for k in ("pretrain", "train_full", "train_frozen4")]
        hours.append(args.frames / r["infer"] / 3600)
        print(
            f"{name:15s} {r['infer']:8.1f} {r['pretrain']:9.1f} {r['train_full']:11.1f} "
            f"{r['train_frozen4']:10.1f} {hours[0]:9.1f} {hours[1]:10.1f} {hours[2]:9.1f} {hours[3]:10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
