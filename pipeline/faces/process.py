"""Per-track face processing: decode → detect → pick the track's face → 68 landmarks → aligned crop → views.

Output of one track (`save_face_result` / `load_face_result`), in `<out_dir>/`:
- `table.parquet`: ONE ROW PER TIMELINE FRAME (0-based, by time stamp: `pipeline.datasets.video`):
  `frame` int32, `has_face` bool, `score` float32, `x1`, `y1`, `x2`, `y2` float32 (frame pixels),
  `landmarks` list[float32] of 136 values (x0, y0, x1, y1, ... of the 68 dlib points, frame pixels).
  `score`, the box and `landmarks` are null where `has_face` is false.
- `<view>.npy` per view: uint8 [M, S, S, 3] RGB, one crop per frame with a face, in frame order; row i of
  `table.filter(pl.col("has_face"))` is crop i. Load with `np.load(path, mmap_mode="r")` (lazy).

Tracks follow Aff-Wild2: `<video>` for one person, `<video>_left` / `<video>_right` for the two people of a
two-person video. Faces are picked per frame by position (`select_face`), without tracking identities over
time; real multi-face tracking (IoU/embedding association across frames) is a later issue.

Memory: frames are streamed. With an output folder, crops are streamed to disk as well, so memory stays flat
however long the video is (only the per-frame table grows, about 0.7 kB per frame). Without one, crops are
kept in memory (tests, short clips).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from pipeline.datasets.video import TimelineDecoder, probe
from pipeline.faces.align import DEFAULT_MARGIN, VIEWS, align_face, make_views
from pipeline.faces.detectors import DEFAULT_DETECTOR, Detection, create_detector
from pipeline.faces.landmarks import LandmarkPredictor, five_points
from pipeline.resume import commit, fresh_staging

TABLE_FILE = "table.parquet"
NUM_LANDMARKS = 68


@dataclass
class FaceConfig:
    """Knobs of the face stage (they change results, so they belong in params.yaml)."""

    detector: str = DEFAULT_DETECTOR  # a key of pipeline.faces.detectors.DETECTORS
    detector_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"upsample": 1, "max_side": 960}
    crop_size: int = 112  # side of the aligned crops and of every view, pixels
    margin: float = DEFAULT_MARGIN  # border around the ArcFace square, fraction of its side
    views: tuple[str, ...] = ("face", "eye_mouth")  # keys of pipeline.faces.align.VIEWS
    min_face_size: float = 0.0  # ignore detections whose shorter box side is below this (frame pixels)
    landmark_model: str | None = None  # dlib 68-point .dat; None = the one in face-recognition-models
    # _left/_right tracks: a lone face in the other half of the frame belongs to the other person.
    lone_face_by_half: bool = True

    def __post_init__(self) -> None:
        # params.yaml gives lists; keep a tuple so configs compare and hash predictably.
        self.views = tuple(self.views)
        unknown = [name for name in self.views if name not in VIEWS]
        if unknown:
            raise KeyError(f"unknown view(s) {unknown} (registered: {', '.join(VIEWS)})")


@dataclass
class FaceResult:
    """Faces of one track.

    Attributes:
        track: track name.
        table: polars DataFrame, one row per timeline frame (schema in the module docstring).
        crops: {view: uint8 [M, S, S, 3]} for the M frames with a face, in frame order (memory-mapped when
            loaded from or streamed to disk).
    """

    track: str
    table: pl.DataFrame
    crops: dict[str, np.ndarray]

    @property
    def num_frames(self) -> int:
        return self.table.height

    @property
    def face_rate(self) -> float:
        """Fraction of decoded frames with a face (0.0 for an empty video)."""
        return float(self.table["has_face"].mean() or 0.0) if self.table.height else 0.0


def track_side(track_name: str) -> str | None:
    """'left' / 'right' for the tracks of a two-person video, None for a one-person track."""
    for side in ("left", "right"):
        if track_name.endswith(f"_{side}"):
            return side
    return None


def select_face(
    detections: Sequence[Detection], track_name: str, frame_width: float | None = None
) -> Detection | None:
    """Pick the face that belongs to a track in one frame.

    Rules: a `_left` track takes the face whose box centre is leftmost, a `_right` track the rightmost,
    a plain track the largest box. This is per-frame only: nothing ties a face to the previous frame's
    (identity tracking across frames is a later issue).

    Args:
        detections: faces found in the frame.
        track_name: the track; its `_left` / `_right` suffix decides the rule.
        frame_width: when given, a `_left` / `_right` track whose candidate is the only face in the frame
            rejects it if its centre lies in the other half (the other person, while this one is not
            detected), instead of giving both tracks the same face.

    Returns:
        The chosen detection, or None.
    """
    if not detections:
        return None
    side = track_side(track_name)
    if side is None:
        return max(detections, key=lambda d: d.area)
    pick = min if side == "left" else max
    chosen = pick(detections, key=lambda d: d.center[0])
    if frame_width is not None and len(detections) == 1:
        centre_x = chosen.center[0]
        if (side == "left" and centre_x > frame_width / 2) or (
            side == "right" and centre_x < frame_width / 2
        ):
            return None
    return chosen


class _CropSink:
    """Collects the crops of one view, in memory or streamed to `<path>` through a raw `.part` file."""

    def __init__(self, size: int, path: Path | None) -> None:
        self.size = size
        self.path = path
        self.count = 0
        self._chunks: list[np.ndarray] = []
        self._part = None
        if path is not None:
            self._part_path = path.with_name(path.name + ".part")
            self._part = self._part_path.open("wb")

    def append(self, crop: np.ndarray) -> None:
        if crop.shape != (self.size, self.size, 3) or crop.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 crop [{self.size}, {self.size}, 3], got {crop.dtype} {crop.shape}"
            )
        if self._part is not None:
            self._part.write(np.ascontiguousarray(crop).tobytes())
        else:
            self._chunks.append(crop)
        self.count += 1

    def finish(self) -> np.ndarray:
        """Return [M, S, S, 3] uint8; on disk, the finished `.npy` opened lazily (mmap)."""
        shape = (self.count, self.size, self.size, 3)
        if self._part is None:
            return np.stack(self._chunks) if self._chunks else np.zeros(shape, dtype=np.uint8)
        self._part.close()
        # The .npy header needs the final count, unknown while streaming: copy the raw file behind a header
        # in bounded chunks (disk time is negligible next to detection), then drop the raw file.
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if self.count:
            raw = np.memmap(self._part_path, dtype=np.uint8, mode="r", shape=shape)
            for start in range(0, self.count, 1024):
                out[start : start + 1024] = raw[start : start + 1024]
            del raw
        out.flush()
        del out
        os.replace(tmp, self.path)
        self._part_path.unlink()
        return np.load(self.path, mmap_mode="r")


class _TrackCollector:
    """Accumulates the per-frame table and the view crops of one track."""

    def __init__(self, track: str, config: FaceConfig, out_dir: Path | None) -> None:
        self.track = track
        self.out_dir = out_dir
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.sinks = {
            view: _CropSink(config.crop_size, out_dir / f"{view}.npy" if out_dir is not None else None)
            for view in config.views
        }
        self.frames: list[int] = []
        self.scores: list[float] = []
        self.boxes: list[tuple[float, float, float, float]] = []
        # float32 arrays, not Python floats: 136 boxed floats per frame would cost ~4 kB instead of 0.5 kB.
        self.landmarks: list[np.ndarray] = []

    def add(
        self,
        frame: int,
        detection: Detection | None,
        landmarks68: np.ndarray | None,
        views: dict[str, np.ndarray] | None,
    ) -> None:
        self.frames.append(frame)
        if detection is None or landmarks68 is None or views is None:
            self.scores.append(np.nan)
            self.boxes.append((np.nan, np.nan, np.nan, np.nan))
            self.landmarks.append(np.full(2 * NUM_LANDMARKS, np.nan, dtype=np.float32))
            return
        self.scores.append(detection.score)
        self.boxes.append(detection.box)
        self.landmarks.append(landmarks68.astype(np.float32).reshape(-1))
        for view, sink in self.sinks.items():
            sink.append(views[view])

    def finish(self) -> FaceResult:
        table = build_table(
            np.asarray(self.frames, dtype=np.int32),
            np.asarray(self.scores, dtype=np.float32),
            np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4),
            np.stack(self.landmarks) if self.landmarks else np.zeros((0, 2 * NUM_LANDMARKS), np.float32),
        )
        crops = {view: sink.finish() for view, sink in self.sinks.items()}
        result = FaceResult(track=self.track, table=table, crops=crops)
        if self.out_dir is not None:
            result.table.write_parquet(self.out_dir / TABLE_FILE)
        return result


def build_table(
    frames: np.ndarray, scores: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray
) -> pl.DataFrame:
    """Assemble the per-frame table.

    Args:
        frames: [N] int32 decoded indices.
        scores: [N] float32, NaN where there is no face.
        boxes: [N, 4] float32 (x1, y1, x2, y2), NaN where there is no face.
        landmarks: [N, 136] float32, NaN where there is no face.

    Returns:
        DataFrame with the schema of the module docstring (nulls, not NaN, for frames without a face).
    """
    has_face = ~np.isnan(scores)
    table = pl.DataFrame(
        {
            "frame": pl.Series(frames, dtype=pl.Int32),
            "has_face": pl.Series(has_face, dtype=pl.Boolean),
            "score": pl.Series(scores, dtype=pl.Float32),
            "x1": pl.Series(boxes[:, 0], dtype=pl.Float32),
            "y1": pl.Series(boxes[:, 1], dtype=pl.Float32),
            "x2": pl.Series(boxes[:, 2], dtype=pl.Float32),
            "y2": pl.Series(boxes[:, 3], dtype=pl.Float32),
            # polars reads a 2-D array as a fixed-size Array; the on-disk contract is a list column.
            "landmarks": pl.Series(landmarks, dtype=pl.Array(pl.Float32, 2 * NUM_LANDMARKS)).cast(
                pl.List(pl.Float32)
            ),
        }
    )
    value_columns = ["score", "x1", "y1", "x2", "y2", "landmarks"]
    return table.with_columns(
        pl.when(pl.col("has_face")).then(pl.col(name)).otherwise(None).alias(name) for name in value_columns
    )


class FaceProcessor:
    """Detector + landmark model + alignment, built once and applied frame by frame to several tracks."""

    def __init__(self, config: FaceConfig) -> None:
        self.config = config
        self.detector = create_detector(config.detector, **config.detector_kwargs)
        self.predictor = LandmarkPredictor(config.landmark_model)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces of at least `min_face_size` in a frame [H, W, 3] uint8."""
        return [d for d in self.detector(rgb) if min(d.width, d.height) >= self.config.min_face_size]

    def process_face(self, rgb: np.ndarray, detection: Detection) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Landmarks and views of one detected face.

        Returns:
            (landmarks68 [68, 2] float32 in frame pixels, {view: [S, S, 3] uint8}).
        """
        landmarks68 = self.predictor(rgb, detection.box)
        # A detector's own 5 points (RetinaFace) come from a stronger model than dlib's on hard poses.
        points5 = detection.landmarks5 if detection.landmarks5 is not None else five_points(landmarks68)
        crop, _ = align_face(rgb, points5, size=self.config.crop_size, margin=self.config.margin)
        return landmarks68, make_views(crop, self.config.views, margin=self.config.margin)


def _run(
    video_path: Path | str,
    out_dirs: dict[str, Path | None],
    config: FaceConfig,
    max_frames: int | None,
) -> dict[str, FaceResult]:
    """Decode a video once and collect every track in `out_dirs` ({track: output folder or None})."""
    video_path = Path(video_path)
    info = probe(video_path)
    processor = FaceProcessor(config)
    collectors = {track: _TrackCollector(track, config, out_dir) for track, out_dir in out_dirs.items()}
    total = info.container_frame_count or None  # a hint for the progress bar only
    if max_frames is not None:
        total = min(total or max_frames, max_frames)
    # Every timeline frame, numbered as the frames stage numbers them (same decoder): one table row each.
    frames = TimelineDecoder(video_path)
    progress = tqdm(frames, total=total, desc=f"faces {'+'.join(out_dirs)}", unit="frame", disable=None)
    try:
        for index, rgb in progress:
            if max_frames is not None and index >= max_frames:
                break
            if rgb is None:  # on the timeline but did not decode: a row without a face
                for collector in collectors.values():
                    collector.add(index, None, None, None)
                continue
            detections = processor.detect(rgb)
            done: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}  # one landmark pass per face
            for track, collector in collectors.items():
                width = rgb.shape[1] if config.lone_face_by_half else None
                chosen = select_face(detections, track, frame_width=width)
                if chosen is None:
                    collector.add(index, None, None, None)
                    continue
                if id(chosen) not in done:
                    done[id(chosen)] = processor.process_face(rgb, chosen)
                collector.add(index, chosen, *done[id(chosen)])
    finally:
        progress.close()
        frames.close()  # releases the capture even when stopped early
    return {track: collector.finish() for track, collector in collectors.items()}


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
        track_name: `<video>`, `<video>_left` or `<video>_right` (decides which face is taken).
        config: face-stage knobs; None = defaults.
        out_dir: when given, results are streamed there (constant memory) and the returned crops are
            memory-mapped from `<out_dir>/<view>.npy`; when None, everything stays in memory.
        max_frames: stop after this many decoded frames (tests, previews); None = the whole video.

    Returns:
        FaceResult with one table row per timeline frame.
    """
    config = config or FaceConfig()
    out = {track_name: Path(out_dir) if out_dir is not None else None}
    return _run(video_path, out, config, max_frames)[track_name]


def process_video(
    video_path: Path | str,
    track_names: Sequence[str],
    config: FaceConfig | None,
    out_root: Path | str,
    max_frames: int | None = None,
    unit_key: str | None = None,
) -> dict[str, Path]:
    """Faces of all tracks of one video, decoding and detecting once (two-person videos have two tracks).

    Writes `<out_root>/<track>/table.parquet` and `<out_root>/<track>/<view>.npy` for each track, each
    track atomically (`pipeline.resume`): it is streamed into `<out_root>/.<track>.tmp` and renamed into
    place when complete, so a killed job leaves a hidden leftover, never a half-written track.

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
    _run(video_path, dict(staging), config, max_frames)
    for track, out_dir in out_dirs.items():
        commit(staging[track], out_dir, unit_key)
    return out_dirs


def save_face_result(result: FaceResult, out_dir: Path | str) -> None:
    """Write `<out_dir>/table.parquet` and `<out_dir>/<view>.npy` (crops already streamed there are kept)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.table.write_parquet(out_dir / TABLE_FILE)
    for view, crops in result.crops.items():
        path = out_dir / f"{view}.npy"
        if (
            isinstance(crops, np.memmap)
            and crops.filename
            and Path(crops.filename).resolve() == path.resolve()
        ):
            continue  # streamed to this very file by process_track; rewriting it would read from itself
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, np.ascontiguousarray(crops, dtype=np.uint8))
        os.replace(tmp, path)


def load_face_result(out_dir: Path | str, track: str | None = None) -> FaceResult:
    """Read a track's folder; crops are memory-mapped (nothing is read until indexed).

    Args:
        out_dir: folder written by `save_face_result` / `process_track` / `process_video`.
        track: track name to record; None = the folder's name.
    """
    out_dir = Path(out_dir)
    table_path = out_dir / TABLE_FILE
    if not table_path.is_file():
        raise FileNotFoundError(f"no face table at {table_path}")
    table = pl.read_parquet(table_path)
    crops = {path.stem: np.load(path, mmap_mode="r") for path in sorted(out_dir.glob("*.npy"))}
    num_faces = int(table["has_face"].sum())
    for view, array in crops.items():
        if array.shape[0] != num_faces:
            raise ValueError(
                f"{out_dir}/{view}.npy has {array.shape[0]} crops but the table has {num_faces} faces"
            )
    return FaceResult(track=track or out_dir.name, table=table, crops=crops)
