"""`affectflow predict` speed and memory with a bundle (default: the demo bundle, models/bundle), measured
side by side in one run on this machine; quote the ratios.

1. Throughput on a 640x360 clip (`WolfgangLanger_Pexels.mp4` from ../shared/fixtures when present, else the
   demo videos joined and scaled to 640x360): frames/s end to end (decode to the written table) and the
   split by step (decode, faces = detect/track/landmarks/align, audio, text, encode, temporal, finish,
   write), batched (the bundle's encoder batch size) against the same models run one crop at a time.
   Models are loaded once beforehand; the load time is printed apart.
2. Length: videos of growing length made by joining the demo videos (scaled to 640x360) with their sound
   (48 kHz), each predicted in a fresh process: ms per frame and peak resident memory (ru_maxrss).

Usage: python -m bench.bench_predict [--bundle models/bundle] [--lengths 0.05 1 5] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a script from anywhere

import pipeline  # noqa: E402,F401  (the torchvision shim, Prefect settings)
from pipeline.audio.read import read_audio, resample  # noqa: E402
from pipeline.datasets.video import iter_frames  # noqa: E402
from pipeline.predict.bundle import load_bundle  # noqa: E402
from pipeline.predict.run import write_video_outputs  # noqa: E402
from pipeline.predict.video import Predictor  # noqa: E402
from pipeline.runtime import configure_torch, steady_heap  # noqa: E402

CLIP = REPO.parent / "shared" / "fixtures" / "videos" / "WolfgangLanger_Pexels.mp4"
DEMO = REPO / "data" / "demo"
STEPS = ("decode", "faces", "audio", "text", "encode", "temporal", "finish", "write")
SIZE = (640, 360)
FPS = 25.0
SOUND_RATE = 48000


def join_demo_videos(path: Path, minutes: float) -> Path:
    """The demo corpus's Aff-Wild2 videos one after another (repeated as needed), each frame scaled and
    padded to 640x360, until `minutes` of video at 25 fps; their sound, resampled to 48 kHz (a camera's
    rate), goes to `<path>.wav` alongside (`sound_for`), in step with the frames."""
    sources = sorted(
        p for p in DEMO.rglob("*") if p.suffix in (".mp4", ".avi") and "C-EXPR-DB" not in p.parts
    )
    sources = [p for p in sources if "Hume-Vidmimic2" not in p.parts]
    if not sources:
        raise SystemExit(f"no demo videos under {DEMO}: run `dvc repro demo` first")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    sound = soundfile.SoundFile(sound_for(path), "w", samplerate=SOUND_RATE, channels=1, subtype="FLOAT")
    needed, written = int(minutes * 60 * FPS), 0
    while written < needed:
        for source in sources:
            count = 0
            for _, rgb in iter_frames(source):
                if rgb is None:
                    continue
                scale = min(SIZE[0] / rgb.shape[1], SIZE[1] / rgb.shape[0])
                small = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)))
                frame = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
                y, x = (SIZE[1] - small.shape[0]) // 2, (SIZE[0] - small.shape[1]) // 2
                frame[y : y + small.shape[0], x : x + small.shape[1]] = small
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                written, count = written + 1, count + 1
                if written >= needed:
                    break
            sound.write(source_sound(source, count))
            if written >= needed:
                break
    writer.release()
    sound.close()
    return path


def sound_for(video: Path) -> Path:
    """The sound file `join_demo_videos` writes beside `video`."""
    return video.with_suffix(".wav")


def source_sound(video: Path, frames: int) -> np.ndarray:
    """[frames / FPS * SOUND_RATE] samples of a demo video's sound (data/demo/audio/<stem>.wav; silence
    for a video without one), cut or padded with silence to its written frames."""
    wav = DEMO / "audio" / f"{video.stem}.wav"
    wanted = round(frames / FPS * SOUND_RATE)
    if not wav.is_file():
        return np.zeros(wanted, np.float32)
    samples, rate = read_audio(wav)
    samples = resample(samples, rate, SOUND_RATE)[:wanted]
    return np.pad(samples, (0, wanted - len(samples)))


def timed_prediction(predictor: Predictor, video: Path, out: Path) -> tuple[int, dict[str, float]]:
    """Predict and write one video; returns (timeline frames, seconds per step incl. `write`)."""
    sound = sound_for(video)
    prediction = predictor.predict(video, sound=sound if sound.is_file() else None)
    start = time.perf_counter()
    write_video_outputs(prediction, video, out, predictor.bundle, report=False)
    seconds = dict(prediction.seconds)
    seconds["write"] = time.perf_counter() - start
    return int(prediction.table["frame"].n_unique()), seconds


def throughput(bundle_dir: Path, video: Path) -> None:
    steady_heap()  # as `affectflow predict` does
    device = configure_torch()
    start = time.perf_counter()
    bundle = load_bundle(bundle_dir, device)
    batched = Predictor(bundle)
    one_by_one = Predictor(bundle, batch_size=1)
    for run in bundle.runs:  # load every model now, not inside the timed runs
        bundle.encoders(run), bundle.sequence_models(run)
    print(
        f"bundle {bundle_dir} loaded in {time.perf_counter() - start:.1f} s ({bundle.describe()['ensemble']})"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, predictor in (("batched", batched), ("one crop at a time", one_by_one)):
            frames, seconds = timed_prediction(predictor, video, Path(tmp) / name.replace(" ", "_"))
            rows[name] = (frames, seconds)
    print(f"\n1. predict on {video.name} ({SIZE[0]}x{SIZE[1]}), device {device}; ms/frame by step")
    header = f"{'encoder batches':<20} {'frames/s':>9} " + " ".join(f"{s:>9}" for s in STEPS)
    print(header)
    print("-" * len(header))
    for name, (frames, seconds) in rows.items():
        total = sum(seconds.values())
        steps = " ".join(f"{1000 * seconds.get(s, 0.0) / frames:9.2f}" for s in STEPS)
        print(f"{name:<20} {frames / total:9.1f} {steps}")
    (frames_a, a), (frames_b, b) = rows.values()
    print(
        f"batched / one at a time: {(frames_a / sum(a.values())) / (frames_b / sum(b.values())):.2f}x the "
        f"frames/s end to end, {b['encode'] / max(a['encode'], 1e-9):.1f}x faster encoding"
    )


def one_length(bundle_dir: str, video: str) -> None:
    """Child process: predict `video`, print JSON with frames, seconds and peak memory."""
    steady_heap()  # as `affectflow predict` does
    device = configure_torch()
    predictor = Predictor(load_bundle(bundle_dir, device))
    for run in predictor.bundle.runs:  # loaded before the clock starts, as in the throughput runs
        predictor.bundle.encoders(run), predictor.bundle.sequence_models(run)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        frames, _ = timed_prediction(predictor, Path(video), Path(tmp) / "out")
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": frames, "seconds": seconds, "peak_mb": peak_mb}))


def lengths(bundle_dir: Path, minutes: list[float]) -> None:
    print("\n2. predict by video length (demo videos joined, 640x360, 25 fps), one process each")
    print(f"{'minutes':>8} {'frames':>7} {'ms/frame':>9} {'peak MB':>8}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in minutes:
            video = join_demo_videos(Path(tmp) / f"joined_{length}.mp4", length)
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(bundle_dir), str(video)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{length:8.2f} {row['frames']:>7} {1000 * row['seconds'] / row['frames']:9.2f} "
                f"{row['peak_mb']:8.0f}"
            )
            video.unlink()
            sound_for(video).unlink()
    first, last = rows[0], rows[-1]
    per_frame = (last["seconds"] / last["frames"]) / (first["seconds"] / first["frames"])
    print(
        f"longest / shortest: {last['frames'] / first['frames']:.0f}x the frames, {per_frame:.2f}x the time "
        f"per frame, {last['peak_mb'] / first['peak_mb']:.2f}x the peak memory"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "models" / "bundle")
    parser.add_argument("--lengths", type=float, nargs="*", default=[0.05, 1.0, 5.0], help="minutes")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_length(*args.one)
        return
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as tmp:
            video = CLIP if CLIP.is_file() else join_demo_videos(Path(tmp) / "clip.mp4", 20 / 60)
            throughput(args.bundle, video)
    if args.lengths:
        lengths(args.bundle, args.lengths)


if __name__ == "__main__":
    main()
