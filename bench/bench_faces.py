"""Face stage speed and memory: frames/s per detector with and without k-frame tracking, split by step, and
per-frame time and peak memory from a short clip to a long video. Everything is measured side by side in
one run on this machine; quote the ratios.

1. Throughput: the whole per-video face pipeline (`pipeline.faces.process`: decode, detect every k frames,
   person tracking, 68 landmarks, quality, pose, alignment, views, identity descriptors, crops written to
   disk) on a 640×360 clip (`WolfgangLanger_Pexels.mp4` from ../shared/fixtures when present, else a
   synthetic one), per detector and k. Models are built once beforehand (the stage builds them once per
   worker), so the figures are per-frame work only.
2. Length: the default params.yaml face config on synthetic 640×360 videos of growing length, each in a
   fresh process: ms per frame and peak resident memory (ru_maxrss).

Usage: python bench/bench_faces.py [--frames 240] [--lengths 300 1200 4800]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a script from anywhere

import pipeline  # noqa: E402,F401  (the torchvision shim, Prefect settings)
from pipeline.config import load_config  # noqa: E402
from pipeline.faces.process import (  # noqa: E402
    FaceProcessor,
    StepTimer,
    _run,
    face_config,
)

CLIP = REPO.parent / "shared" / "fixtures" / "videos" / "WolfgangLanger_Pexels.mp4"
STEPS = ("decode", "detect", "landmarks", "warp", "identity", "write")
# (detector, kwargs, k, frames cap): RetinaFace on every frame is slow, so it gets fewer frames.
RUNS = [
    ("dlib_hog", {"upsample": 0}, 1, None),
    ("dlib_hog", {"upsample": 0}, 4, None),
    ("dlib_hog", {"upsample": 0}, 8, None),
    ("blazeface", {}, 1, None),
    ("blazeface", {}, 4, None),
    ("retinaface", {}, 1, 60),
    ("retinaface", {}, 4, None),
    ("retinaface", {}, 8, None),
]


def synthetic_video(path: Path, frames: int) -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_decode import make_video

    return make_video(path, frames, 640, 360)


def throughput(video: Path, frames: int) -> None:
    base = face_config(load_config(REPO / "params.yaml").faces)
    print(f"\n1. face stage throughput on {video.name} (640x360), first {frames} frames; ms/frame by step")
    header = f"{'detector':<12} {'k':>2} {'frames/s':>9} " + " ".join(f"{s:>9}" for s in STEPS)
    print(header)
    print("-" * len(header))
    for detector, kwargs, every, cap in RUNS:
        config = replace(
            base,
            detector=detector,
            detector_kwargs=kwargs,
            tracking=replace(base.tracking, detect_every=every),
        )
        processor = FaceProcessor(config)
        count = min(frames, cap or frames)
        with tempfile.TemporaryDirectory() as tmp:
            timer = StepTimer()
            start = time.perf_counter()
            _run(video, {"clip": Path(tmp) / "clip"}, config, count, processor=processor, timer=timer)
            seconds = time.perf_counter() - start
        steps = " ".join(f"{1000 * timer.seconds.get(s, 0.0) / count:9.2f}" for s in STEPS)
        print(f"{detector:<12} {every:>2} {count / seconds:9.1f} {steps}")


def one_length(video: str) -> None:
    """Child process: run the default config on `video`, print JSON with seconds and peak memory."""
    config = face_config(load_config(REPO / "params.yaml").faces)
    processor = FaceProcessor(config)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = _run(Path(video), {"v": Path(tmp) / "v"}, config, None, processor=processor)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": results["v"].num_frames, "seconds": seconds, "peak_mb": peak_mb}))


def lengths(counts: list[int]) -> None:
    print("\n2. default face config (params.yaml) by video length, synthetic 640x360, one process each")
    print(f"{'frames':>7} {'ms/frame':>9} {'peak MB':>8}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            video = synthetic_video(Path(tmp) / f"v{count}.mp4", count)
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(video)], capture_output=True, text=True, check=True
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['frames']:>7} {1000 * row['seconds'] / row['frames']:9.2f} {row['peak_mb']:8.0f}")
    first, last = rows[0], rows[-1]
    per_frame = (last["seconds"] / last["frames"]) / (first["seconds"] / first["frames"])
    print(
        f"longest / shortest: {last['frames'] / first['frames']:.0f}x the frames, "
        f"{per_frame:.2f}x the time per frame, "
        f"{last['peak_mb'] / first['peak_mb']:.2f}x the peak memory"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--lengths", type=int, nargs="+", default=[300, 1200, 4800])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_length(args.one)
        return
    with tempfile.TemporaryDirectory() as tmp:
        video = CLIP if CLIP.is_file() else synthetic_video(Path(tmp) / "clip.mp4", args.frames)
        throughput(video, args.frames)
    lengths(args.lengths)


if __name__ == "__main__":
    main()
