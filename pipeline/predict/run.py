"""`affectflow predict`: a video or a folder of videos through a bundle, one output folder per video.

Per video, in `<out>/<video>/` (written into a hidden staging folder and renamed when complete, so a
failure never leaves half a folder):
- `predictions.parquet` and `predictions.csv`: the table of `pipeline.predict.table`;
- `summary.json`: what a person wants first (`pipeline.predict.summary.summarise`), the notes, the
  bundle it came from; no wall-clock time, so a rerun writes the same bytes;
- with `report=True`: `report.html` (one self-contained page) and `annotated.mp4`.

A folder is processed video by video with one progress bar; a video that fails (unreadable, empty,
not a video) is reported with its file name and the reason, the others go on. `<out>/run.json` lists
what was written and what failed. Exit status (`predict_paths` returns it): 0 every video written,
1 some failed, 2 nothing to do (no video found, or the bundle cannot be used).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.predict.annotate import write_annotated_video
from pipeline.predict.bundle import Bundle, BundleError, load_bundle
from pipeline.predict.report import write_report
from pipeline.predict.summary import summarise
from pipeline.predict.table import check_prediction_table
from pipeline.predict.video import Predictor, VideoPrediction

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
SOUND_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
RUN_FILE = "run.json"


def _companion(folder: Path | None, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    """`<folder>/<stem><suffix>` for the first suffix that exists (a transcript, a sound file), else None."""
    if folder is None:
        return None
    return next((folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()), None)


def find_videos(path: Path) -> list[Path]:
    """A video file as given, or the video files of a folder (recursively, by suffix, sorted).

    Raises:
        FileNotFoundError: the path does not exist.
    """
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    raise FileNotFoundError(f"{path}: no such file or folder")


def output_names(videos: list[Path]) -> dict[Path, str]:
    """Output folder name per video: its stem, or its file name where two videos share a stem."""
    stems = [video.stem for video in videos]
    names = {}
    for video in videos:
        name = video.stem if stems.count(video.stem) == 1 else video.name
        while name in names.values():  # same file name in two subfolders
            name = f"{video.parent.name}_{name}"
        names[video] = name
    return names


def write_video_outputs(
    prediction: VideoPrediction, video_path: Path, out_dir: Path, bundle: Bundle, report: bool
) -> dict:
    """Write one video's outputs into `out_dir` (created); returns its summary."""
    out_dir.mkdir(parents=True)
    check_prediction_table(prediction.table, bundle.tasks, str(video_path))
    prediction.table.write_parquet(out_dir / "predictions.parquet")
    prediction.table.write_csv(out_dir / "predictions.csv")
    summary = summarise(prediction.table)
    summary["source"] = video_path.name
    summary["fps"] = prediction.fps
    summary["notes"] = list(dict.fromkeys([*bundle.notes, *prediction.notes, *summary.get("notes", [])]))
    summary["bundle"] = bundle.describe()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_value) + "\n")
    if report:
        write_report(
            prediction.table, summary, out_dir / "report.html", faces=prediction.faces, title=video_path.name
        )
        write_annotated_video(
            video_path, prediction.table, out_dir / "annotated.mp4", fps=prediction.fps or None
        )
    return summary


@dataclass
class RunResult:
    """What a `predict_paths` call did: videos written (name -> folder), failures (file -> reason), and
    seconds per step summed over the videos."""

    written: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    frames: int = 0

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


def predict_videos(
    videos: list[Path],
    predictor: Predictor,
    out: Path,
    *,
    report: bool = False,
    transcripts: Path | None = None,
    sounds: Path | None = None,
    max_frames: int | None = None,
) -> RunResult:
    """Predict each video into `<out>/<name>/`, going on past failures (each recorded with its reason)."""
    out.mkdir(parents=True, exist_ok=True)
    result = RunResult()
    names = output_names(videos)
    progress = tqdm(videos, desc="predict", unit="video", disable=None if len(videos) > 1 else True)
    for video in progress:
        progress.set_postfix_str(video.name)
        name = names[video]
        staging = out / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            prediction = predictor.predict(
                video,
                _companion(transcripts, video.stem, (".txt",)),
                _companion(sounds, video.stem, SOUND_SUFFIXES),
                max_frames=max_frames,
            )
            write_video_outputs(prediction, video, staging, predictor.bundle, report)
        except (OSError, ValueError, RuntimeError) as error:  # a bad file: reported, the others go on
            shutil.rmtree(staging, ignore_errors=True)
            result.failed[str(video)] = f"{type(error).__name__}: {error}"
            print(f"error: {video}: {error}", file=sys.stderr)
            continue
        shutil.rmtree(out / name, ignore_errors=True)
        staging.rename(out / name)
        result.written[str(video)] = name
        result.frames += prediction.table.select("frame").n_unique()
        for step, seconds in prediction.seconds.items():
            result.seconds[step] = result.seconds.get(step, 0.0) + seconds
    (out / RUN_FILE).write_text(
        json.dumps({"written": result.written, "failed": result.failed}, indent=1) + "\n"
    )
    return result


def predict_paths(
    source: Path,
    bundle_dir: Path,
    out: Path,
    *,
    report: bool = False,
    transcripts: Path | None = None,
    sounds: Path | None = None,
    device: str = "cpu",
    max_frames: int | None = None,
) -> int:
    """The command: find the videos, load the bundle, predict; returns the exit status."""
    try:
        videos = find_videos(source)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not videos:
        print(f"error: {source}: no video files (suffixes {', '.join(VIDEO_SUFFIXES)})", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(bundle_dir, device)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in bundle.notes:
        print(f"note: {note}", file=sys.stderr)
    result = predict_videos(
        videos,
        Predictor(bundle),
        out,
        report=report,
        transcripts=transcripts,
        sounds=sounds,
        max_frames=max_frames,
    )
    print(f"predict: {len(result.written)} of {len(videos)} videos written to {out}", file=sys.stderr)
    if result.failed:
        print(f"predict: {len(result.failed)} failed (listed in {out / RUN_FILE})", file=sys.stderr)
    return result.exit_status


def _json_value(value: object) -> object:
    """numpy scalars in the summary as plain numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
