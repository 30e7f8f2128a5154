"""Face detectors side by side on the real fixture clips: share of frames with a face, and time per frame.

`single_face.mp4` and `WolfgangLanger_Pexels.mp4` show a face in every frame (recall), `no_face.mp4` in
none (false positives); `face_noface.mov` and `noface_face.mov` switch half-way. Every `--every`-th frame
of each clip is decoded once and given to every detector, one frame at a time, in this process. Every
registered offline detector is run (those not listed in `DETECTORS` with their default arguments).

With `--demo data/demo` two more columns come from the demo corpus: every `--every`-th frame of its
one-person videos that have an EXPR label file, split by the label (the demo marks the frames of its
no-face stretches invalid, -1): faces found on frames with a face (recall) and on frames without (false
positives).

Usage: python bench/bench_detectors.py [--every 4] [--clips ../shared/fixtures/videos] [--demo data/demo]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from anywhere

import pipeline  # noqa: E402, F401
from pipeline.datasets.affwild2 import find_tracks, find_video, read_label_file  # noqa: E402
from pipeline.datasets.video import iter_frames  # noqa: E402
from pipeline.faces.detectors import DETECTORS as REGISTRY  # noqa: E402
from pipeline.faces.detectors import create_detector  # noqa: E402

CLIPS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov")
DETECTORS = (
    ("dlib_hog", {}),
    ("dlib_hog", {"upsample": 1}),
    ("opencv_haar", {}),
    ("retinaface", {}),
    ("dlib_mmod", {"max_side": 320}),  # about 7 µs per pixel: 1.7 s per 640×360 frame at full size
    ("blazeface", {}),
    ("blazeface", {"model": 1}),
    ("mtcnn", {}),
)
NOT_OFFLINE = {"retinaface_serengil"}  # needs TensorFlow and a weights file the project cannot install


def detector_list() -> list[tuple[str, dict]]:
    """`DETECTORS`, plus any registered offline detector it misses (with default arguments)."""
    listed = {name for name, _ in DETECTORS}
    extra = [(name, {}) for name in sorted(REGISTRY) if name not in listed | NOT_OFFLINE]
    return list(DETECTORS) + extra


def demo_frames(root: Path, every: int) -> tuple[list, list]:
    """Sampled frames of the demo's one-person EXPR tracks: (frames with a face, frames without)."""
    from pipeline.tasks.definitions import get_task

    expr = get_task("expr")
    with_face, without = [], []
    for track in find_tracks(root):
        if track.name != track.video or "expr" not in track.label_files:
            continue
        labels = read_label_file(track.label_files["expr"], expr).reshape(-1)
        for index, rgb in iter_frames(find_video(root, track.video)):
            if index % every == 0 and index < len(labels):
                (with_face if labels[index] >= 0 else without).append(rgb)
    return with_face, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=4, help="use every n-th frame")
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "videos"
    parser.add_argument("--clips", type=Path, default=default)
    parser.add_argument("--demo", type=Path, default=None, help="demo corpus root (adds two columns)")
    args = parser.parse_args()
    frames = {
        clip: [rgb for index, rgb in iter_frames(args.clips / clip) if index % args.every == 0]
        for clip in CLIPS
    }
    columns = list(CLIPS)
    if args.demo is not None:
        frames["demo: face"], frames["demo: no face"] = demo_frames(args.demo, args.every)
        columns += ["demo: face", "demo: no face"]
    header = "| detector | " + " | ".join(columns) + " | ms/frame |"
    print(header)
    print("|---" * (len(columns) + 2) + "|")
    for name, kwargs in detector_list():
        detector = create_detector(name, **kwargs)
        detector(frames[CLIPS[0]][0])  # warm-up (first-call allocations)
        cells, seconds, count = [], 0.0, 0
        for clip in columns:
            found = 0
            for rgb in frames[clip]:
                start = time.perf_counter()
                found += bool(detector(rgb))
                if clip in CLIPS:  # ms/frame over the fixture clips (640x360, 960x540) only
                    seconds += time.perf_counter() - start
                    count += 1
            cells.append(f"{found}/{len(frames[clip])}")
        label = name + (f" {kwargs}" if kwargs else "")
        print(f"| {label} | " + " | ".join(cells) + f" | {1000 * seconds / count:.0f} |")


if __name__ == "__main__":
    main()
