"""Stage demo: generate the built-in demo corpus (synthetic Aff-Wild2-layout videos and labels).

Reads the `demo` section of params.yaml and passes it to `pipeline.demo.generate_corpus`; --out is wiped
and recreated (a DVC output).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import pipeline  # noqa: F401  (installs the torchvision shim first)
from pipeline.config import load_config
from pipeline.demo import generate_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="corpus root to (re)create")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    args = parser.parse_args(argv)

    section = asdict(load_config(args.params).demo)
    section["fps_choices"] = list(section["fps_choices"])
    start = time.perf_counter()
    summary = generate_corpus(args.out, **section)
    print(
        f"demo: {summary['identities']} identities, {summary['videos']} videos, {summary['tracks']} tracks, "
        f"{summary['frames']} frames ({summary['face_frames']} of {summary['track_frames']} track-frames "
        f"show a face) -> {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
