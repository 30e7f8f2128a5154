"""The face table: one row per timeline frame of a track, what the faces stage found there and why.

Schema of `<faces>/<track>/table.parquet` (readable with polars or pyarrow), in `COLUMNS` order:

- `frame` int32: 0-based timeline index (`pipeline.datasets.video`); every timeline frame has a row.
- `has_face` bool: a usable face of this track's person; crop `i` of `<view>.npy` is the i-th such row.
- `status` str: `face` (usable face), `filled` (none; `fill_from`'s crop stands in), `none` (no usable
  frame in the whole track).
- `reason` str: why there is no usable face (null when `face`), one of `REASONS`.
- `fill_from` int32: the frame whose crop stands for this one: itself when `face`, else the nearest usable
  frame of the same person track (ties go to the earlier; seed 004's rule); null when `none`.
- `person` int32: id of the person track (`pipeline.faces.tracking`) the row's face belongs to; null without.
- `origin` str: `detected` (the detector's box on this frame), `tracked` (box carried by the tracker between
  detection frames), `organisers` (Aff-Wild2's `cropped_aligned` images); null without a face.
- `score` float32: the detector's score (its own scale); for tracked boxes, the previous detection's.
- `x1`, `y1`, `x2`, `y2` float32: face box in frame pixels.
- `landmarks5` list[float32] (10): the 5 alignment points (x, y; image-left eye first).
- `landmarks` list[float32] (136): dlib's 68 points (x0, y0, x1, y1, ...) in frame pixels.
- `yaw`, `pitch`, `roll` float32: head pose in degrees from the 68 points (`pipeline.faces.pose`).
- `sharpness` float32: variance of the Laplacian of the aligned grey crop (`pipeline.faces.quality`).

Rejected faces keep their box, landmarks and pose (`has_face` false, `reason` says why), so nothing found is
dropped silently. Values are null where nothing was measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

TABLE_FILE = "table.parquet"  # a track's face table inside its output folder
NUM_LANDMARKS = 68
# Why a frame has no usable face, in the order the faces stage checks. `undecoded`: on the timeline but the
# frame did not decode; `no_face`: no face of this person found (or the person is off screen); `small`,
# `landmarks`, `corrupt`, `blurred`: a face was found but rejected (`pipeline.faces.quality`); `no_image`:
# the organisers' `cropped_aligned` folder has no image for the frame.
REASONS = ("undecoded", "no_face", "no_image", "small", "landmarks", "corrupt", "blurred")
STATUSES = ("face", "filled", "none")
ORIGINS = ("detected", "tracked", "organisers")

SCHEMA: dict[str, pl.DataType] = {
    "frame": pl.Int32(),
    "has_face": pl.Boolean(),
    "status": pl.String(),
    "reason": pl.String(),
    "fill_from": pl.Int32(),
    "person": pl.Int32(),
    "origin": pl.String(),
    "score": pl.Float32(),
    "x1": pl.Float32(),
    "y1": pl.Float32(),
    "x2": pl.Float32(),
    "y2": pl.Float32(),
    "landmarks5": pl.List(pl.Float32()),
    "landmarks": pl.List(pl.Float32()),
    "yaw": pl.Float32(),
    "pitch": pl.Float32(),
    "roll": pl.Float32(),
    "sharpness": pl.Float32(),
}
COLUMNS = tuple(SCHEMA)


def nearest_usable(usable: np.ndarray) -> np.ndarray:
    """For every frame, the index of the nearest usable frame (seed 004's adjacent-frame rule).

    Args:
        usable: [T] bool.

    Returns:
        [T] int64: index of the closest True entry, ties going to the earlier one; -1 everywhere when none is.
    """
    usable = np.asarray(usable, dtype=bool)
    valid = np.flatnonzero(usable)
    if valid.size == 0:
        return np.full(len(usable), -1, dtype=np.int64)
    frames = np.arange(len(usable))
    position = np.searchsorted(valid, frames)
    left = valid[np.clip(position - 1, 0, valid.size - 1)]
    right = valid[np.clip(position, 0, valid.size - 1)]
    return np.where(np.abs(frames - left) <= np.abs(right - frames), left, right)


@dataclass
class FaceRow:
    """What one frame of a track holds; `reason` None means a usable face (a crop is stored for it)."""

    frame: int
    reason: str | None = "no_face"
    person: int | None = None
    origin: str | None = None
    score: float = float("nan")
    box: tuple[float, float, float, float] | None = None
    landmarks5: np.ndarray | None = None  # [5, 2]
    landmarks68: np.ndarray | None = None  # [68, 2]
    pose: tuple[float, float, float] | None = None  # yaw, pitch, roll (degrees)
    sharpness: float = float("nan")

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r} (expected one of {REASONS})")
        if self.origin is not None and self.origin not in ORIGINS:
            raise ValueError(f"unknown origin {self.origin!r} (expected one of {ORIGINS})")
        if self.reason is None and self.box is None:
            raise ValueError(f"frame {self.frame}: a usable face needs a box")


class FaceTableBuilder:
    """Collects `FaceRow`s of one track frame by frame in compact arrays (about 0.7 kB a frame)."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.reasons: list[str | None] = []
        self.persons: list[int] = []
        self.origins: list[str | None] = []
        self.scalars: list[np.ndarray] = []  # [9] float32: score, x1, y1, x2, y2, yaw, pitch, roll, sharpness
        self.points5: list[np.ndarray] = []  # [10] float32
        self.points68: list[np.ndarray] = []  # [136] float32; arrays, not Python floats (~4 kB per frame)

    def add(self, row: FaceRow) -> None:
        if self.frames and row.frame <= self.frames[-1]:
            raise ValueError(f"frames must increase: {row.frame} after {self.frames[-1]}")
        nan4 = (np.nan,) * 4
        self.frames.append(row.frame)
        self.reasons.append(row.reason)
        self.persons.append(-1 if row.person is None else int(row.person))
        self.origins.append(row.origin)
        self.scalars.append(
            np.array(
                [row.score, *(row.box or nan4), *(row.pose or nan4[:3]), row.sharpness], dtype=np.float32
            )
        )
        self.points5.append(_flat(row.landmarks5, 10))
        self.points68.append(_flat(row.landmarks68, 2 * NUM_LANDMARKS))

    def __len__(self) -> int:
        return len(self.frames)

    def finish(self) -> pl.DataFrame:
        """The table (schema in the module docstring), with `status` and `fill_from` worked out."""
        n = len(self.frames)
        scalars = np.stack(self.scalars) if n else np.zeros((0, 9), np.float32)
        table = pl.DataFrame(
            {
                "frame": pl.Series(self.frames, dtype=pl.Int32),
                "has_face": pl.Series([reason is None for reason in self.reasons], dtype=pl.Boolean),
                "reason": pl.Series(self.reasons, dtype=pl.String),
                "person": pl.Series(self.persons, dtype=pl.Int32),
                "origin": pl.Series(self.origins, dtype=pl.String),
                **{
                    name: pl.Series(scalars[:, i], dtype=pl.Float32)
                    for i, name in enumerate(
                        ["score", "x1", "y1", "x2", "y2", "yaw", "pitch", "roll", "sharpness"]
                    )
                },
                "landmarks5": _list_column(self.points5, 10),
                "landmarks": _list_column(self.points68, 2 * NUM_LANDMARKS),
            }
        )
        # -1 / NaN sentinels become nulls: a reader should never mistake them for values.
        table = table.with_columns(
            pl.when(pl.col("person") >= 0).then(pl.col("person")).alias("person"),
            *(
                pl.when(pl.col(name).is_not_nan()).then(pl.col(name)).alias(name)
                for name in ["score", "x1", "y1", "x2", "y2", "yaw", "pitch", "roll", "sharpness"]
            ),
            *(
                pl.when(pl.col(name).list.first().is_not_nan()).then(pl.col(name)).alias(name)
                for name in ["landmarks5", "landmarks"]
            ),
        )
        return with_status(table)


def with_status(table: pl.DataFrame) -> pl.DataFrame:
    """Work out `status` and `fill_from` from `has_face` (rows in frame order); columns in `COLUMNS` order."""
    usable = table["has_face"].to_numpy()
    frames = table["frame"].to_numpy()
    nearest = nearest_usable(usable)
    status = np.where(usable, "face", np.where(nearest >= 0, "filled", "none"))
    fill_from = pl.Series("fill_from", frames[np.clip(nearest, 0, None)] if len(frames) else [], pl.Int32)
    return table.with_columns(
        pl.Series("status", status.tolist(), dtype=pl.String),
        pl.when(pl.Series(nearest >= 0)).then(fill_from).alias("fill_from"),
    ).select(COLUMNS)


def _flat(points: np.ndarray | None, width: int) -> np.ndarray:
    if points is None:
        return np.full(width, np.nan, dtype=np.float32)
    flat = np.asarray(points, dtype=np.float32).reshape(-1)
    if flat.shape != (width,):
        raise ValueError(f"expected {width // 2} points, got an array of {flat.size} values")
    return flat


def _list_column(rows: list[np.ndarray], width: int) -> pl.Series:
    values = np.stack(rows) if rows else np.zeros((0, width), np.float32)
    # polars reads a 2-D array as a fixed-size Array; the on-disk contract is a list column.
    return pl.Series(values, dtype=pl.Array(pl.Float32, width)).cast(pl.List(pl.Float32))


def points_array(column: pl.Series, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A list column of points (`landmarks`, `landmarks5`) as ([n] bool: the row has `width` values,
    [n, width] float32 with NaN rows elsewhere), through numpy: as Python lists, a 30-minute track's 68
    points were ~200 MB of float objects."""
    lengths = column.list.len().fill_null(0).to_numpy()
    complete = lengths == width
    values = np.full((len(column), width), np.nan, np.float32)
    if complete.any():
        rows = column.filter(pl.Series(complete)).explode().to_numpy()
        values[complete] = rows.astype(np.float32, copy=False).reshape(-1, width)
    return complete, values


def check_table(table: pl.DataFrame, where: str) -> None:
    """Raise ValueError naming `where` when a face table does not follow the schema."""
    missing = [name for name in COLUMNS if name not in table.columns]
    if missing:
        raise ValueError(f"{where}: face table lacks column(s) {missing} (schema: pipeline.faces.table)")
    wrong = [
        f"{name}: {table.schema[name]} (expected {SCHEMA[name]})"
        for name in COLUMNS
        if table.schema[name] != SCHEMA[name]
    ]
    if wrong:
        raise ValueError(f"{where}: face table column types differ: {'; '.join(wrong)}")
    frames = table["frame"].to_numpy()
    if len(frames) and (frames[0] != 0 or np.any(np.diff(frames) != 1)):
        raise ValueError(f"{where}: face table frames must be 0, 1, 2, ... (one row per timeline frame)")
