"""Stage audio: per-frame audio features of every video, aligned to its frame timeline by time stamp
(`pipeline.audio`): `audio.extractor` logmel_stats (log-mel statistics, no weights needed) or vggish
(VGGish embeddings from the weights file `audio.vggish_weights`; nothing is downloaded).

The sound comes from `<root>/audio/<video>.wav|.mp3` when the dataset ships it (the demo corpus, Hume-
Vidmimic2), else from the raw video's audio stream. Output: <out>/<video>.parquet, one row per timeline
frame (`pipeline.audio.features.write_audio_table`); a video without sound gets all-uncovered rows and a
note naming it, so sequence models see "no audio" rather than silence.
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
from pipeline.audio.features import frame_audio_features, make_extractor, write_audio_table
from pipeline.audio.read import AudioError, read_audio_timed
from pipeline.config import load_config
from pipeline.datasets.video import probe

SOUND_EXTS = (".wav", ".mp3", ".flac")


def sound_file(root: Path, video: str, video_path: Path) -> Path:
    """The dataset's own sound file of `video` (`<root>/audio/<video>.<ext>`), else the raw video."""
    for ext in SOUND_EXTS:
        path = root / "audio" / f"{video}{ext}"
        if path.is_file():
            return path
    return video_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params).audio
    kwargs = (
        {"weights": cfg.vggish_weights, "pca": cfg.vggish_pca or None} if cfg.extractor == "vggish" else {}
    )
    extractor = make_extractor(cfg.extractor, **kwargs)  # VGGish: weights load once (or fail here, clearly)
    videos = (
        pl.read_parquet(artifacts.tracks_table(args.frames))
        .unique("video", keep="first", maintain_order=True)
        .select("video", "root", "video_path", "n_frames")
    )
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    silent = []
    for video, root, relative, n_frames in tqdm(videos.iter_rows(), total=videos.height, desc="audio"):
        video_path = Path(root) / relative
        frame_times = np.arange(n_frames) / probe(video_path).fps  # the timeline's nominal frame times
        source = sound_file(Path(root), video, video_path)
        try:
            samples, rate, start = read_audio_timed(source)
            features, covered = frame_audio_features(extractor, samples, rate, frame_times, start=start)
        except AudioError as error:
            silent.append(f"{source}: {error}")
            features = np.zeros((n_frames, extractor.dim), np.float32)
            covered = np.zeros(n_frames, bool)
        write_audio_table(
            artifacts.audio_table(args.out, video), np.arange(n_frames), features, covered, cfg.extractor
        )
    for note in silent:
        print(f"note: no audio, every frame marked uncovered: {note}")
    print(f"audio: {videos.height} videos ({len(silent)} without sound), {cfg.extractor} -> {args.out}")


if __name__ == "__main__":
    main()
