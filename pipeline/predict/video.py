"""Predict one video with a bundle: faces of every person, encoder features, audio and text, the fold
ensemble of sequence models, smoothing and decisions, as one table row per decoded frame and person.

The steps, each timed (`VideoPrediction.seconds`, for the benchmark):
1. `faces`: one streaming decode; detection every `detect_every` frames, person tracking, landmarks,
   alignment (`pipeline.faces.process.process_people`). Crops go to a scratch folder and are read back
   one batch at a time (`pipeline.faces.storage.read_rows`), so memory does not grow with the crops.
2. `audio`, `text`: the video's audio stream aligned to its frames (as the audio stage does), and the
   transcript's vector (a video without a transcript gets the embedding of "", as in training).
3. `encode`: each run's encoders over the person's crops in batches; features rounded as the cache stores
   them (`pipeline.features.cache.as_stored`), so the models see what they were trained on, and written to
   the scratch folder as they come.
4. `temporal`: every run's and seed's sequence model over windows (`predict_sequence`), outputs averaged;
   each window's inputs are read from the measured rows (`pipeline.predict.streams.IndexedStream`), so no
   [frames, D] stream is ever built whole.
5. `finish`: faceless frames filled, smoothing and decisions as the runs chose on their tuning folds
   (`pipeline.submission.predict.finish_outputs`, the submit stage's code).

Every decoded frame of every kept person gets exactly one row; a video where nobody is found gets one
row per frame with no face and no outputs, so "nothing found" is in the table, not missing from it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline.audio.features import frame_audio_features, make_extractor
from pipeline.audio.logmel import SAMPLE_RATE
from pipeline.audio.read import AudioError, read_audio_timed
from pipeline.config import GEOMETRY_STREAM
from pipeline.datasets.video import probe
from pipeline.faces.process import FaceProcessor, FaceResult, StepTimer, process_people
from pipeline.faces.storage import RowWriter, read_rows
from pipeline.features.cache import as_stored, pool_features
from pipeline.features.geometry import face_geometry
from pipeline.features.sequences import AUDIO_STREAM, TEXT_CLIP, TrackSequence
from pipeline.inference.images import to_tensor_batch
from pipeline.inference.sequences import predict_sequence
from pipeline.models.encoders import input_size
from pipeline.predict.bundle import Bundle
from pipeline.predict.streams import IndexedStream, face_rows, row_mean
from pipeline.predict.table import add_outputs, face_columns, table_schema
from pipeline.runtime import autocast, release_heap
from pipeline.submission.predict import finish_outputs
from pipeline.tasks.definitions import add_predicted
from pipeline.text.embed import TextEncoder, read_utterances

FACE_STEPS = ("detect", "landmarks", "warp", "identity", "write")  # StepTimer steps of the faces stage
SAMPLED_FACES = 24  # faces per person kept for the report's contact sheet
REPORT_VIEW = "face"  # the crop the contact sheet shows (else the first view there is)


@dataclass
class VideoPrediction:
    """The result of one video.

    Attributes:
        video: the file's stem (the `video` column).
        table: the prediction table (`pipeline.predict.table`), sorted by face_id then frame.
        notes: what a user should know (no sound, no transcript, people left out, frames that did not
            decode); also in the summary.
        faces: (face_id, frame, RGB crop) samples for the report's contact sheet.
        fps: the container's frame rate (0.0 when unknown).
        seconds: step -> seconds spent (decode, faces, audio, text, encode, temporal, finish).
    """

    video: str
    table: pl.DataFrame
    notes: list[str]
    faces: list[tuple[int, int, np.ndarray]]
    fps: float
    seconds: dict[str, float] = field(default_factory=dict)


class Predictor:
    """A bundle's models, the face processor, the audio extractor and the text encoder, built once and
    reused for every video.

    Args:
        bundle: a loaded bundle (`pipeline.predict.bundle.load_bundle`).
        batch_size: crops per encoder forward pass (None = the bundle's `features.batch_size`).
    """

    def __init__(self, bundle: Bundle, batch_size: int | None = None) -> None:
        self.bundle = bundle
        self.device = bundle.device
        self.batch_size = batch_size or int(bundle.meta["features"]["batch_size"])
        self.face_config = bundle.face_config()
        self.processor = FaceProcessor(self.face_config)
        self.modalities = tuple(bundle.sequence["modalities"])
        self.views = tuple(bundle.sequence["views"])
        self.audio = None
        if AUDIO_STREAM in self.modalities:
            audio = bundle.meta["audio"]
            kwargs = {}
            if audio["extractor"] == "vggish":
                kwargs = {
                    "weights": str(bundle.root / audio["weights"]),
                    "pca": str(bundle.root / audio["pca"]) if audio["pca"] else None,
                }
            self.audio = make_extractor(audio["extractor"], **kwargs)
        self.text = None
        if TEXT_CLIP in self.modalities:
            model = bundle.meta["text"]["model"]
            self.text = TextEncoder(str(bundle.root / model) if model else "", device=self.device)

    def predict(
        self,
        video_path: Path | str,
        transcript: Path | None = None,
        sound: Path | None = None,
        scratch: Path | None = None,
        max_frames: int | None = None,
    ) -> VideoPrediction:
        """Predict one video (see the module docstring).

        Args:
            transcript: the video's transcript (`pipeline.text.embed` formats); None = no transcript.
            sound: a sound file to use instead of the video's own audio stream (datasets that ship the
                audio apart, like Hume-Vidmimic2's `audio/`); None = the video's.
            scratch: a folder for the crops (removed afterwards); None = a temporary folder.
            max_frames: stop after this many timeline frames (previews, tests).

        Raises:
            pipeline.datasets.video.VideoOpenError: the file cannot be opened as a video.
        """
        video_path = Path(video_path)
        timer = StepTimer()
        notes: list[str] = []
        owned = scratch is None
        folder = Path(tempfile.mkdtemp(prefix="affectflow-predict-")) if owned else Path(scratch)
        try:
            with timer("faces_total"):
                people = process_people(
                    video_path, self.face_config, folder, max_frames, self.processor, timer
                )
            fps = probe(video_path).fps
            n_frames = people.n_frames
            if people.undecoded:
                notes.append(f"{len(people.undecoded)} of {n_frames} timeline frames did not decode")
            for person, usable in people.dropped.items():
                notes.append(
                    f"person track {person} left out: {usable} usable face frame(s), fewer than "
                    f"faces.min_frames ({self.face_config.tracking.min_frames})"
                )
            with timer("audio"):
                audio = self._audio(sound or video_path, n_frames, fps, notes)
            with timer("text"):
                text = self._text(transcript, notes)
            tables, faces = [], []
            for person in sorted(people.people):  # face_id order; each table is in frame order
                result = people.people.pop(person)  # its face rows are not needed once it has its table
                tables.append(self._person(video_path.stem, person, result, fps, audio, text, timer, folder))
                faces += _sample_faces(person, result)
            if not tables:
                notes.append(f"no face found in {n_frames} frames: every row says so, with no outputs")
                tables.append(self._nobody(video_path.stem, n_frames, fps, people.undecoded))
        finally:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
        table = pl.concat(tables, rechunk=False)  # already sorted by face_id, frame: not copied again
        seconds = dict(timer.seconds)
        seconds["faces"] = seconds.pop("faces_total") - seconds.get("decode", 0.0)
        for step in FACE_STEPS:
            seconds.pop(step, None)
        return VideoPrediction(video_path.stem, table, notes, faces, fps, seconds)

    def _audio(
        self, source: Path, n_frames: int, fps: float, notes: list[str]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """([T, D] features, [T] covered) of the video's sound (from `source`: the video or a sound file),
        or None when audio is not an input."""
        if self.audio is None:
            return None
        frame_times = np.arange(n_frames) / (fps if fps > 0 else 25.0)
        try:
            # Both extractors resample to 16 kHz first: doing it while decoding gives the same samples
            # (`pipeline.audio.read.BlockResampler`) and never holds the track at its own rate. Coverage
            # then ends at ceil(N * 16000 / rate) / 16000 s, less than one 16 kHz sample after N / rate.
            samples, rate, start = read_audio_timed(source, rate=SAMPLE_RATE)
        except AudioError as error:
            notes.append(f"no usable audio ({error}): the audio input is marked absent on every frame")
            return np.zeros((n_frames, self.audio.dim), np.float32), np.zeros(n_frames, bool)
        return frame_audio_features(self.audio, samples, rate, frame_times, start=start)

    def _text(self, transcript: Path | None, notes: list[str]) -> np.ndarray | None:
        """[D] the transcript's mean utterance vector, or None when text is not an input."""
        if self.text is None:
            return None
        utterances = read_utterances(transcript) if transcript is not None else []
        if transcript is None:
            notes.append("no transcript: the text input is the embedding of empty text (as in training)")
        texts = [u.text for u in utterances] or [""]
        return self.text.encode(texts).mean(axis=0).astype(np.float32)

    def _person(
        self,
        video: str,
        person: int,
        result: FaceResult,
        fps: float,
        audio: tuple[np.ndarray, np.ndarray] | None,
        text: np.ndarray | None,
        timer: StepTimer,
        scratch: Path,
    ) -> pl.DataFrame:
        """The rows of one person: every run's and seed's outputs averaged, then finished.

        The model inputs are `IndexedStream`s: the measured rows (encoder features spilled to `scratch`,
        one file per run and view, deleted after the run) and a per-frame index, so what this holds grows
        with the person's face frames by the geometry alone, not by [T, D] copies per stream.
        """
        face_table = result.table
        has_face = face_table["has_face"].to_numpy()
        n = len(has_face)
        rows = face_rows(has_face)  # frames without a face read their nearest face frame's row
        tasks = self.bundle.tasks
        mode = self.bundle.sequence["track_features"]
        fixed: dict[str, IndexedStream] = {}
        if GEOMETRY_STREAM in self.views:
            _, geometry = face_geometry(face_table, f"{video} person {person}")
            geometry = as_stored(geometry)
            fixed[GEOMETRY_STREAM] = IndexedStream(geometry, rows, mode, row_mean(geometry))
        if audio is not None:
            fixed[AUDIO_STREAM] = IndexedStream(audio[0], np.arange(n), mode, row_mean(audio[0], audio[1]))
        window, stride = self.bundle.sequence["window"], self.bundle.sequence["stride"]
        sums: dict[str, np.ndarray] = {}
        count = 0
        for index, run in enumerate(self.bundle.runs):
            streams = dict(fixed)
            paths = []
            with timer("encode"):
                for view, encoder in self.bundle.encoders(run).items():
                    paths.append(scratch / f"person{person}_run{index}_{view}.features.npy")
                    features = self._encode(encoder, result.crops[view], paths[-1])
                    release_heap()  # the batches' freed blocks, before they fragment the heap
                    streams[view] = IndexedStream(features, rows, mode, row_mean(features))
            with timer("temporal"):
                sequence = TrackSequence(
                    f"{video}/person{person}",
                    {name: streams[name] for name in self.views},
                    {name: has_face for name in self.views},
                )
                if audio is not None:
                    sequence.streams[AUDIO_STREAM] = streams[AUDIO_STREAM]
                    sequence.masks[AUDIO_STREAM] = audio[1]
                if text is not None:
                    sequence.clips[TEXT_CLIP] = text
                for model in self.bundle.sequence_models(run):
                    outputs = add_predicted(
                        predict_sequence(model, sequence, window, stride, self.device), tasks
                    )
                    for task in tasks:
                        sums[task.name] = sums.get(task.name, 0.0) + outputs[task.name]
                    count += 1
            for path in paths:
                path.unlink(missing_ok=True)
        sources = sequence.sources()  # the same for every run: faces and audio coverage
        with timer("finish"):
            values, decided = {}, {}
            for task in tasks:
                spec = self.bundle.meta["smoothing"].get(task.name, "none")
                knobs = self.bundle.meta["knobs"].get(task.name, {})
                fill = bool(self.bundle.meta["fill_faceless"])
                final, decision = finish_outputs(task, sums[task.name] / count, sources, spec, knobs, fill)
                if task.kind == "regression":
                    final = decision  # values clipped to the task's range
                values[task.name] = final[0] if task.level == "video" else final
                if task.kind != "regression":
                    decided[task.name] = decision
            table = face_columns(face_table, video, person, fps)
            return add_outputs(table, tasks, values, decided, sources)

    @torch.inference_mode()
    def _encode(self, encoder: torch.nn.Module, crops: np.ndarray, path: Path) -> np.ndarray:
        """uint8 [M, S, S, 3] crops -> [M, D] float32 features rounded as the cache stores them
        (`as_stored`), `batch_size` crops per forward pass, written to `path` as they come and returned
        memory-mapped (`IndexedStream` reads it with `read_rows`, so it never sits in memory whole)."""
        pool = self.bundle.meta["features"]["pool"]
        size = input_size(encoder)
        writer = RowWriter((encoder.num_features,), np.float32, path)
        try:
            for start in range(0, len(crops), self.batch_size):
                batch = read_rows(crops, start, start + self.batch_size)
                x = to_tensor_batch(batch, self.device, size=size)
                with autocast(self.device):
                    features = pool_features(encoder, x, pool).float().cpu().numpy()
                writer.extend(as_stored(features))
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def _nobody(self, video: str, n_frames: int, fps: float, undecoded: list[int]) -> pl.DataFrame:
        """One row per frame of a video where nobody was found: flags say so, outputs are null."""
        schema = table_schema(self.bundle.tasks)
        frames = np.arange(n_frames, dtype=np.int32)
        reasons = np.where(np.isin(frames, undecoded), "undecoded", "no_face").tolist()
        columns = {
            "video": [video] * n_frames,
            "frame": frames,
            "timestamp": frames / fps if fps > 0 else np.full(n_frames, np.nan),
            "face_found": np.zeros(n_frames, bool),
            "face_filled": np.zeros(n_frames, bool),
            "face_rejected": np.zeros(n_frames, bool),
            "face_reason": reasons,
            "outputs_from": ["none"] * n_frames,
        }
        return pl.DataFrame(
            {
                name: columns.get(name, pl.Series(name, [None] * n_frames, dtype))
                for name, dtype in schema.items()
            },
            schema=schema,
        )


def _sample_faces(person: int, result: FaceResult) -> list[tuple[int, int, np.ndarray]]:
    """Up to `SAMPLED_FACES` evenly spaced (face_id, frame, crop) of one person for the contact sheet."""
    frames = result.table.filter(pl.col("has_face"))["frame"].to_numpy()
    if not len(frames) or not result.crops:
        return []
    view = REPORT_VIEW if REPORT_VIEW in result.crops else next(iter(result.crops))
    picks = np.unique(np.linspace(0, len(frames) - 1, min(SAMPLED_FACES, len(frames))).round().astype(int))
    return [(person, int(frames[i]), read_rows(result.crops[view], i, i + 1)[0]) for i in picks]
