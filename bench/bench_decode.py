"""Per-frame time and memory stay flat with video length, for decoding alone and for the whole face stage.

py-feat users saw per-frame time grow from 1 s to 3 s and processes crash on long videos because frames and
results accumulated in memory. This writes a long synthetic video (a real face, skimage's astronaut, moving
over a textured background), then
1. decodes it with `iter_frames`, and
2. runs `process_track` on it (detect + 68 landmarks + align + views on every frame, crops streamed to disk),
printing ms/frame and resident memory (RSS) for each block of frames and the last-block / first-block ratios.

Usage: python bench/bench_decode.py [--frames 3000] [--block 500] [--width 320 --height 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from anywhere

import pipeline.faces.process as faces  # noqa: E402
from pipeline.datasets.video import TimelineDecoder, iter_frames  # noqa: E402
from pipeline.faces.process import FaceConfig, process_track  # noqa: E402


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; not the peak)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * 4096 / 2**20


def make_video(path: Path, num_frames: int, width: int, height: int) -> Path:
    """Write an MPEG-4 video: the astronaut's head (about 130 px) drifting over a noisy background."""
    from skimage import data

    head = cv2.resize(data.astronaut()[30:230, 130:320], (124, 130), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    background = rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    span_x, span_y = width - head.shape[1], height - head.shape[0]
    for i in range(num_frames):
        frame = background.copy()
        x = int(span_x * (0.5 + 0.5 * np.sin(i / 40)))
        y = int(span_y * (0.5 + 0.5 * np.sin(i / 57)))
        frame[y : y + head.shape[0], x : x + head.shape[1]] = head
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class BlockTimer:
    """Wraps a frame iterator and records, per block of frames, the wall time per frame and the RSS.

    The time between two yields is the time the consumer spent on the previous frame plus the decode of the
    next one, so wrapping the decoder inside `process_track` times the whole per-frame pipeline.
    """

    def __init__(self, block: int) -> None:
        self.block = block
        self.rows: list[tuple[int, float, float]] = []  # (frames so far, ms/frame in block, RSS MB at end)

    def wrap(self, frames: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        start = time.perf_counter()
        count = 0
        try:
            for item in frames:
                yield item
                count += 1
                if count % self.block == 0:
                    now = time.perf_counter()
                    self.rows.append((count, 1000 * (now - start) / self.block, rss_mb()))
                    start = now
        finally:
            frames.close()

    def report(self, title: str) -> None:
        print(f"\n{title}")
        print(f"{'frames':>8} {'ms/frame':>9} {'RSS MB':>8}")
        for count, ms, rss in self.rows:
            print(f"{count:>8} {ms:>9.2f} {rss:>8.1f}")
        if len(self.rows) >= 2:
            (_, ms0, rss0), (_, ms1, rss1) = self.rows[0], self.rows[-1]
            print(f"last/first block: time {ms1 / ms0:.2f}x, RSS {rss1 / rss0:.3f}x ({rss1 - rss0:+.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        video = make_video(Path(tmp) / "long.mp4", args.frames, args.width, args.height)
        print(
            f"video: {args.frames} frames {args.width}x{args.height}, {video.stat().st_size / 2**20:.1f} MB"
        )

        decode = BlockTimer(args.block)
        for _ in decode.wrap(iter_frames(video)):
            pass
        decode.report("decode only (iter_frames)")

        # Time process_track from the inside: it looks up `TimelineDecoder` in pipeline.faces.process.
        full = BlockTimer(args.block)

        class TimedDecoder(TimelineDecoder):
            def __iter__(self):
                return full.wrap(super().__iter__())

        faces.TimelineDecoder = TimedDecoder
        try:
            result = process_track(video, "long", FaceConfig(), out_dir=Path(tmp) / "faces")
        finally:
            faces.TimelineDecoder = TimelineDecoder
        full.report("process_track (dlib_hog detect + 68 landmarks + align + face/eye_mouth views)")
        print(f"faces found in {result.face_rate:.1%} of {result.num_frames} frames; crops streamed to disk")


if __name__ == "__main__":
    main()
