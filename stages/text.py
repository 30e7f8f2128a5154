"""Stage text: transcript embeddings of every video with the offline all-MiniLM-L6-v2 sentence encoder
(`pipeline.text`; `text.model` "" = the packaged model), one row per utterance, cached as Parquet.

Transcripts are read from `<root>/transcripts/<video>.txt` (plain lines, or `start,end,text` lines).
A video without a transcript gets one empty utterance (the embedding of ""), and the count is printed.
Output: <out>/<video>.parquet (`pipeline.text.embed.write_text_table`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.text.embed import TextEncoder, Utterance, read_utterances, write_text_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params).text
    encoder = TextEncoder(cfg.model)
    videos = (
        pl.read_parquet(artifacts.tracks_table(args.frames))
        .unique("video", keep="first", maintain_order=True)
        .select("video", "root")
    )
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    missing = []
    for video, root in tqdm(videos.iter_rows(), total=videos.height, desc="text"):
        path = Path(root) / "transcripts" / f"{video}.txt"
        utterances = read_utterances(path) if path.is_file() else []
        if not path.is_file():
            missing.append(str(path))
        utterances = utterances or [Utterance(None, None, "")]
        embeddings = encoder.encode([u.text for u in utterances])
        write_text_table(artifacts.text_table(args.out, video), utterances, np.asarray(embeddings))
    if missing:
        print(f"note: {len(missing)} videos have no transcript (embedded as empty text), e.g. {missing[0]}")
    print(f"text: {videos.height} videos -> {args.out}")


if __name__ == "__main__":
    main()
