"""Where a sequence model's named inputs come from, for one run: the run's encoder features per view, the
landmark geometry cache, the per-frame audio features and the per-video transcript vector. One loader for
training (`pipeline.training.cv`) and for test-time prediction (stage submit), so both see the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline import artifacts
from pipeline.audio.features import read_audio_table
from pipeline.config import GEOMETRY_STREAM
from pipeline.features.sequences import (
    AUDIO_STREAM,
    TEXT_CLIP,
    TrackSequence,
    load_track,
    track_features,
)
from pipeline.tasks.definitions import Task
from pipeline.text.embed import read_text_table, table_video_vector


@dataclass(frozen=True)
class SequenceSources:
    """The folders one run's sequences are read from.

    Attributes:
        frames_dir: data/frames (labels, tracks.parquet).
        features_dir: the run's encoder features (data/features/<run>).
        geometry_dir: data/geometry (needed when `landmarks` is a view).
        audio_dir: data/audio (needed for the audio modality).
        text_dir: data/text (needed for the text modality).
    """

    frames_dir: Path
    features_dir: Path
    geometry_dir: Path | None = None
    audio_dir: Path | None = None
    text_dir: Path | None = None

    def check(self, views: tuple[str, ...], modalities: tuple[str, ...]) -> None:
        """Every folder the inputs need is given (names the missing one)."""
        needs = [(GEOMETRY_STREAM in views, self.geometry_dir, f"view '{GEOMETRY_STREAM}'", "--geometry")]
        needs += [(AUDIO_STREAM in modalities, self.audio_dir, "the audio modality", "--audio")]
        needs += [(TEXT_CLIP in modalities, self.text_dir, "the text modality", "--text")]
        for needed, folder, what, flag in needs:
            if needed and folder is None:
                raise ValueError(f"{what} is an input, but its folder was not given ({flag})")

    def view_tables(self, track: str, views: tuple[str, ...]) -> dict[str, Path]:
        """view -> feature table of one track: the run's encoder features, or the geometry cache."""
        return {
            view: artifacts.feature_table(
                self.geometry_dir if view == GEOMETRY_STREAM else self.features_dir, track
            )
            for view in views
        }

    def load(
        self,
        tracks: list[str],
        views: tuple[str, ...],
        modalities: tuple[str, ...],
        tasks: list[Task],
        track_feature_mode: str,
    ) -> list[TrackSequence]:
        """The sequences of `tracks`: one stream per view, `audio` (per frame, minus its track mean like the
        face streams) and `text` (the transcript's mean utterance vector) when in `modalities`."""
        self.check(views, modalities)
        video_of = {}
        if modalities:  # audio and text are stored per raw video
            table = pl.read_parquet(artifacts.tracks_table(self.frames_dir)).select("track", "video")
            video_of = dict(table.iter_rows())
        sequences = []
        for track in tracks:
            sequence = load_track(
                track,
                self.view_tables(track, views),
                artifacts.labels_table(self.frames_dir, track),
                list(views),
                tasks,
                track_feature_mode,
            )
            video = video_of.get(track, track)
            if AUDIO_STREAM in modalities:
                path = artifacts.audio_table(self.audio_dir, video)
                features, covered = read_audio_table(path)
                if len(features) != sequence.n_frames:
                    raise ValueError(
                        f"{path}: {len(features)} frames, but track {track} has {sequence.n_frames}; "
                        "rerun the audio stage"
                    )
                # Minus the track's mean (the voice and the room), as the face streams: what is left is
                # what changes over time (speaking, loudness, brightness).
                sequence.streams[AUDIO_STREAM] = track_features(features, covered, track_feature_mode)
                sequence.masks[AUDIO_STREAM] = covered
            if TEXT_CLIP in modalities:
                table = read_text_table(artifacts.text_table(self.text_dir, video))
                sequence.clips[TEXT_CLIP] = table_video_vector(table)
            sequences.append(sequence)
        return sequences
