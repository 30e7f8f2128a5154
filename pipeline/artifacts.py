"""Where every artifact lives: the one module that owns file names inside the DVC outputs.

Stages get their root folders from `dvc.yaml` (paths reach code only from there); inside a root, the
layout is defined here and nowhere else, so a future `affectflow predict` and the tests read the same
names the stages write.
"""

from __future__ import annotations

from pathlib import Path

# frames stage (data/frames)
TRACKS = "tracks.parquet"  # one row per track: track, video, video_path, split, subject, n_frames, tasks


def tracks_table(frames_dir: Path) -> Path:
    return Path(frames_dir) / TRACKS


def frame_index(frames_dir: Path, video: str) -> Path:
    return Path(frames_dir) / "index" / f"{video}.parquet"


def labels_table(frames_dir: Path, track: str) -> Path:
    """One row per timeline frame of the track: frame + the label columns of every task."""
    return Path(frames_dir) / "labels" / f"{track}.parquet"


# faces stage (data/faces)
def face_table(faces_dir: Path, track: str) -> Path:
    return Path(faces_dir) / track / "table.parquet"


def face_crops(faces_dir: Path, track: str, view: str) -> Path:
    """uint8 [M, S, S, 3] crops of the frames with a face, in frame order."""
    return Path(faces_dir) / track / f"{view}.npy"


def faces_summary(faces_dir: Path) -> Path:
    return Path(faces_dir) / "summary.parquet"


# folds stage (data/splits)
def folds_table(splits_dir: Path) -> Path:
    """One row per track: track, video, subject, group, split, n_frames, fold."""
    return Path(splits_dir) / "folds.parquet"


def roles_table(splits_dir: Path) -> Path:
    """One row per (run, track): role train | tune | test."""
    return Path(splits_dir) / "roles.parquet"


# pretrain / finetune stages (models/pretrain, models/finetune/<run>)
ENCODER = "encoder.pt"
HISTORY = "history.json"
RECONSTRUCTION = "reconstruction.png"


def encoder_checkpoint(model_dir: Path) -> Path:
    return Path(model_dir) / ENCODER


def view_encoder(finetune_dir: Path, view: str) -> Path:
    """The run's encoder fine-tuned on one view's crops (models/finetune/<run>/<view>/encoder.pt)."""
    return Path(finetune_dir) / view / ENCODER


def history(model_dir: Path) -> Path:
    """Per-epoch losses and validation scores (no wall-clock time: later stages may read it)."""
    return Path(model_dir) / HISTORY


# features stage (data/features/<run>)
def feature_table(features_dir: Path, track: str) -> Path:
    """One row per (timeline frame, view): frame, view, has_face, embedding."""
    return Path(features_dir) / f"{track}.parquet"


# train stage (models/temporal/<run>)
# audio / text / geometry stages (data/audio, data/text: per video; data/geometry: per track, as features)
def audio_table(audio_dir: Path, video: str) -> Path:
    """One row per timeline frame of the video: frame, covered, embedding (`pipeline.audio.features`)."""
    return Path(audio_dir) / f"{video}.parquet"


def text_table(text_dir: Path, video: str) -> Path:
    """One row per utterance of the video's transcript: start, end, text, embedding (`pipeline.text`)."""
    return Path(text_dir) / f"{video}.parquet"


def sequence_model(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed_{seed}" / "model.pt"


def sequence_history(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed_{seed}" / HISTORY


def raw_predictions(run_dir: Path) -> Path:
    """One row per (seed, track, frame) of the run's tune and test tracks: role + `<task>_<i>` outputs."""
    return Path(run_dir) / "predictions.parquet"


# smooth stage (data/predictions/<run>.parquet and .json)
def smoothed_predictions(smoothed_dir: Path, run: str) -> Path:
    return Path(smoothed_dir) / f"{run}.parquet"


def smoothing_choice(smoothed_dir: Path, run: str) -> Path:
    """seed -> task -> chosen smoothing spec and the tuning-fold scores of every candidate."""
    return Path(smoothed_dir) / f"{run}.json"


# evaluate stage (models/decisions, metrics/, plots/)
def decisions(decisions_dir: Path, run: str) -> Path:
    """seed -> task -> decision knobs (AU thresholds) tuned on the run's tuning fold."""
    return Path(decisions_dir) / f"{run}.json"


def run_metrics(metrics_dir: Path, run: str) -> Path:
    return Path(metrics_dir) / "runs" / f"{run}.json"
