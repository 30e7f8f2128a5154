"""A contact sheet per video: a few frames side by side with what the faces stage found there, to look at.

One column per sampled frame (`sample_frames`), top to bottom:
- `frame N | t s`, then the frame scaled to `thumb_width` with, for every track, its box (one colour per
  track; solid = `detected`, dashed and thinner = `tracked`, thin with a red cross and a red label =
  rejected, i.e. `has_face` false but a box kept), a label `track p<person>`, the 68 landmarks as dots in
  the track's colour and the 5 alignment points in yellow;
- per track: a status line, one tile per view (the aligned crop of the frame; for a `filled` frame the crop
  of its `fill_from` frame, dimmed, with an orange border and "from N"; otherwise a grey tile with the
  reason), and a line with score, head pose (yaw/pitch/roll) and sharpness when measured.
Above the columns: the video name, frame count and sampled frames, one line per track with its face rate
and reasons, and a legend. Frames that did not decode are grey tiles labelled "not decoded".

The video is decoded once, streamed (`pipeline.datasets.video.TimelineDecoder`), and decoding stops after
the last sampled frame; only the canvas is held in memory.

Inputs are the faces stage's outputs (`pipeline.faces.table` for the table schema): read a track's folder
with `load_track_outputs`. Columns other than `frame` and `has_face` may be missing (older tables): what
they would show is then left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import polars as pl

from pipeline.datasets.video import TimelineDecoder, VideoInfo, probe
from pipeline.faces.table import TABLE_FILE

# Colours are RGB (the canvas is RGB; converted to BGR only when encoding the PNG).
BACKGROUND = (28, 28, 28)
TEXT = (235, 235, 235)
MUTED = (160, 160, 160)
GREY_TILE = (85, 85, 85)
TRACK_COLOURS = ((60, 220, 60), (40, 170, 255), (255, 150, 30), (230, 70, 230), (0, 220, 210))
POINTS5 = (255, 235, 0)  # yellow: distinct from every track colour
REJECTED = (235, 40, 40)
FILLED = (255, 150, 30)

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.42  # ~7 px per character: 45 characters across a 320 px column
LINE = 16  # height of one text line, pixels
PAD = 8  # around the sheet and between columns
GAP = 4  # between tiles, and between the blocks of a column


@dataclass(frozen=True)
class SheetLayout:
    """Where things are on the sheet, in canvas pixels (also used by tests to find a column's thumbnail).

    Attributes:
        columns: number of frame columns (at least 1, so an empty video still gets a readable sheet).
        thumb_width, thumb_height: size of each frame thumbnail.
        title_height: height of the title block above the columns.
        track_views: {track: number of views}; each track's block holds a status line, one tile row, an
            info line.
    """

    columns: int
    thumb_width: int
    thumb_height: int
    title_height: int
    track_views: dict[str, int]

    def tile_size(self, track: str) -> int:
        """Side of the square crop tiles of a track: the column width shared by its views, at most half."""
        views = self.track_views[track]
        if views == 0:
            return 0
        return min((self.thumb_width - GAP * (views - 1)) // views, self.thumb_width // 2)

    def track_height(self, track: str) -> int:
        tile = self.tile_size(track)
        return LINE + (tile + GAP if tile else 0) + LINE + GAP

    def column_x(self, column: int) -> int:
        return PAD + column * (self.thumb_width + PAD)

    @property
    def thumb_y(self) -> int:
        return self.title_height + LINE

    def track_y(self, track: str) -> int:
        """Top of a track's block below the thumbnail."""
        y = self.thumb_y + self.thumb_height + GAP
        for name in self.track_views:
            if name == track:
                return y
            y += self.track_height(name)
        raise KeyError(track)

    @property
    def width(self) -> int:
        return PAD + self.columns * (self.thumb_width + PAD)

    @property
    def height(self) -> int:
        return self.thumb_y + self.thumb_height + GAP + sum(map(self.track_height, self.track_views)) + PAD


def sheet_layout(
    frame_size: tuple[int, int], columns: int, thumb_width: int, crops: dict[str, dict[str, np.ndarray]]
) -> SheetLayout:
    """Layout for frames of `frame_size` (width, height) and the tracks/views of `crops` (in its order)."""
    width, height = frame_size
    if width <= 0 or height <= 0:
        width, height = 16, 9  # the container did not say: a common aspect ratio
    title_lines = 2 + len(crops)  # video line, one per track, legend
    return SheetLayout(
        columns=max(1, columns),
        thumb_width=thumb_width,
        thumb_height=max(1, round(thumb_width * height / width)),
        title_height=PAD + title_lines * LINE + GAP,
        track_views={track: len(views) for track, views in crops.items()},
    )


def sample_frames(n_frames: int, count: int) -> list[int]:
    """Evenly spread frame indices: first and last included when count >= 2, the middle one when count == 1.

    Args:
        n_frames: frames on the timeline.
        count: how many to pick.

    Returns:
        Sorted distinct indices in [0, n_frames): min(count, n_frames) of them ([] when either is <= 0).
    """
    if n_frames <= 0 or count <= 0:
        return []
    if count >= n_frames:
        return list(range(n_frames))
    if count == 1:
        return [(n_frames - 1) // 2]
    # Integer rounding of i * (n - 1) / (count - 1): exact and platform-independent; steps are >= 1, so the
    # indices are distinct.
    span, steps = n_frames - 1, count - 1
    return [(2 * i * span + steps) // (2 * steps) for i in range(count)]


def load_track_outputs(track_dir: Path) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Read one track's folder of the faces stage.

    Returns:
        (table, {view: uint8 [M, S, S, 3] memory-mapped}), views sorted by name.

    Raises:
        FileNotFoundError: the folder has no `table.parquet`.
    """
    track_dir = Path(track_dir)
    table_path = track_dir / TABLE_FILE
    if not table_path.is_file():
        raise FileNotFoundError(f"no face table at {table_path}")
    table = pl.read_parquet(table_path)
    # A view name has no dot: this skips leftovers of interrupted writes such as `face.npy.tmp.npy`.
    crops = {
        path.stem: np.load(path, mmap_mode="r")
        for path in sorted(track_dir.glob("*.npy"))
        if "." not in path.stem
    }
    return table, crops


# ---------------------------------------------------------------- per-track lookups


@dataclass
class _Track:
    """What the sheet needs of one track: its rows at the sampled frames and where each crop lives."""

    name: str
    colour: tuple[int, int, int]
    rows: dict[int, dict[str, Any]]  # frame -> row (only the sampled frames)
    face_frames: np.ndarray  # [M] frames with has_face, in crop order
    crops: dict[str, np.ndarray]  # view -> [M, S, S, 3]

    def crop_index(self, frame: int) -> int | None:
        """Index of a frame's crop, None when the frame has no usable face."""
        i = int(np.searchsorted(self.face_frames, frame))
        return i if i < len(self.face_frames) and self.face_frames[i] == frame else None


def _prepare_tracks(
    tables: dict[str, pl.DataFrame], crops: dict[str, dict[str, np.ndarray]], frames: list[int]
) -> list[_Track]:
    unknown = [track for track in crops if track not in tables]
    if unknown:
        raise ValueError(f"crops given for track(s) {unknown} that have no table")
    tracks = []
    for i, (name, table) in enumerate(tables.items()):
        missing = [column for column in ("frame", "has_face") if column not in table.columns]
        if missing:
            raise ValueError(f"track {name!r}: face table lacks column(s) {missing}")
        face_frames = table.filter(pl.col("has_face"))["frame"].to_numpy().astype(np.int64)
        if np.any(np.diff(face_frames) <= 0):
            raise ValueError(f"track {name!r}: face table frames must increase")
        views = crops.get(name, {})
        for view, array in views.items():
            if array.ndim != 4 or array.shape[3] != 3 or array.dtype != np.uint8:
                raise ValueError(
                    f"track {name!r}: {view} crops must be uint8 [M, S, S, 3], "
                    f"got {array.dtype} {array.shape}"
                )
            if array.shape[0] != len(face_frames):
                raise ValueError(
                    f"track {name!r}: {view} has {array.shape[0]} crops but the table has "
                    f"{len(face_frames)} has_face rows (crop i belongs to the i-th has_face row)"
                )
        rows = {row["frame"]: row for row in table.filter(pl.col("frame").is_in(frames)).to_dicts()}
        tracks.append(_Track(name, TRACK_COLOURS[i % len(TRACK_COLOURS)], rows, face_frames, views))
    return tracks


def _n_frames(tables: dict[str, pl.DataFrame], container_frame_count: int) -> int:
    """Timeline length: the tables have one row per timeline frame; without any, the container's count."""
    lengths = [int(table["frame"].max()) + 1 for table in tables.values() if table.height]
    if lengths:
        return max(lengths)
    return 0 if tables else container_frame_count  # tables that are all empty: nothing decoded


def _track_summary(name: str, table: pl.DataFrame) -> str:
    n = table.height
    faces = int(table["has_face"].sum()) if n else 0
    text = f"{name}: faces {faces}/{n} ({faces / n:.0%})" if n else f"{name}: no rows"
    if "status" in table.columns and n:
        filled = int((table["status"] == "filled").sum())
        none = int((table["status"] == "none").sum())
        text += f", filled {filled}, none {none}"
    if "reason" in table.columns and n:
        counts = table["reason"].drop_nulls().value_counts(sort=True)
        if counts.height:
            text += " | " + ", ".join(f"{reason} {count}" for reason, count in counts.iter_rows())
    return text


# ---------------------------------------------------------------- drawing helpers


def _text(
    image: np.ndarray,
    text: str,
    x: int,
    y: int,
    colour: tuple[int, int, int] = TEXT,
    background: tuple[int, int, int] | None = None,
    max_width: int | None = None,
) -> int:
    """Write one line whose top-left corner is (x, y); cut with '..' to fit `max_width`. Returns its width."""
    (width, height), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    if max_width is not None:
        while text and width > max_width:
            text = text[:-3] + ".." if len(text) > 3 else ""
            (width, height), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    if background is not None:
        cv2.rectangle(image, (x, y), (x + width + 3, y + LINE - 1), background, -1)
    # Baseline placed so that the glyphs sit in the middle of a LINE-high band.
    cv2.putText(image, text, (x + 2, y + (LINE + height) // 2 - 1), FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)
    return width + 4


def _dashed_rectangle(
    image: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], colour: tuple[int, int, int], dash: int = 6
) -> None:
    (x1, y1), (x2, y2) = p1, p2
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for (ax, ay), (bx, by) in zip(corners[:-1], corners[1:], strict=True):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            a = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            b = (ax + (bx - ax) * end // max(length, 1), ay + (by - ay) * end // max(length, 1))
            cv2.line(image, a, b, colour, 1, cv2.LINE_AA)


def _grey_tile(width: int, height: int, lines: list[str]) -> np.ndarray:
    """[height, width, 3] grey tile with centred lines of text."""
    tile = np.empty((height, width, 3), dtype=np.uint8)
    tile[:] = GREY_TILE
    top = (height - LINE * len(lines)) // 2
    for i, line in enumerate(lines):
        (text_width, _), _ = cv2.getTextSize(line, FONT, FONT_SCALE, 1)
        _text(tile, line, max(0, (width - text_width) // 2 - 2), top + i * LINE, TEXT, max_width=width - 4)
    return tile


def _points(row: dict[str, Any], column: str, count: int) -> np.ndarray | None:
    """[count, 2] float32 points of a list column, None when null or missing."""
    values = row.get(column)
    if values is None or len(values) != 2 * count:
        return None
    points = np.asarray(values, dtype=np.float32).reshape(count, 2)
    return None if np.isnan(points).any() else points


def _box(row: dict[str, Any]) -> tuple[float, float, float, float] | None:
    values = [row.get(name) for name in ("x1", "y1", "x2", "y2")]
    if any(v is None or not np.isfinite(v) for v in values):
        return None
    return tuple(values)  # type: ignore[return-value]


def _draw_track_on_thumb(thumb: np.ndarray, track: _Track, row: dict[str, Any], scale: float) -> None:
    """Box, label and landmarks of one track on a thumbnail [h, w, 3] (frame pixels times `scale`)."""
    box = _box(row)
    if box is None:
        return
    rejected = not row["has_face"]
    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    if rejected:
        cv2.rectangle(thumb, (x1, y1), (x2, y2), track.colour, 1, cv2.LINE_AA)
        # A red cross in the bottom-right corner: visible, without hiding the face the expert wants to judge
        # (nor the label above the box).
        size = max(5, min(x2 - x1, y2 - y1) // 6)
        cv2.line(thumb, (x2 - size, y2 - size), (x2, y2), REJECTED, 2, cv2.LINE_AA)
        cv2.line(thumb, (x2, y2 - size), (x2 - size, y2), REJECTED, 2, cv2.LINE_AA)
    elif row.get("origin") == "tracked":
        _dashed_rectangle(thumb, (x1, y1), (x2, y2), track.colour)
    else:
        cv2.rectangle(thumb, (x1, y1), (x2, y2), track.colour, 2, cv2.LINE_AA)

    points68 = _points(row, "landmarks", 68)
    if points68 is not None:
        for x, y in points68 * scale:
            cv2.circle(thumb, (int(round(x)), int(round(y))), 1, track.colour, -1, cv2.LINE_AA)
    points5 = _points(row, "landmarks5", 5)
    if points5 is not None:
        for x, y in points5 * scale:
            cv2.circle(thumb, (int(round(x)), int(round(y))), 2, POINTS5, -1, cv2.LINE_AA)

    person = row.get("person")
    label = track.name if person is None else f"{track.name} p{person}"
    if rejected:
        label += f" rejected: {row.get('reason') or '?'}"
    elif row.get("origin") == "tracked":
        label += " (tracked)"
    # Above the box, or inside it when the box touches the top of the frame.
    label_y = y1 - LINE if y1 >= LINE else max(0, y1 + 2)
    label_x = min(max(0, x1 - 1), max(0, thumb.shape[1] - 60))
    _text(
        thumb,
        label,
        label_x,
        label_y,
        (255, 255, 255) if rejected else (0, 0, 0),
        background=REJECTED if rejected else track.colour,
        max_width=thumb.shape[1] - label_x - 4,
    )


def _fit(crop: np.ndarray, size: int) -> np.ndarray:
    """Resize a crop [S, S, 3] to [size, size, 3]."""
    if crop.shape[0] == size:
        return np.ascontiguousarray(crop)
    interpolation = cv2.INTER_LINEAR if size > crop.shape[0] else cv2.INTER_AREA
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interpolation)


def _crop_tile(track: _Track, view: str, row: dict[str, Any] | None, size: int) -> np.ndarray:
    """[size, size, 3] tile: the frame's aligned crop, its stand-in when filled, or a grey tile saying why."""
    if row is None:
        return _grey_tile(size, size, ["no table row"])
    if row["has_face"]:
        index = track.crop_index(row["frame"])
        assert index is not None  # face_frames holds every has_face frame
        return _fit(track.crops[view][index], size)
    reason = row.get("reason") or "no face"
    source = row.get("fill_from")
    index = track.crop_index(source) if source is not None else None
    if index is None:
        return _grey_tile(
            size, size, [reason] if source is None else [reason, f"fill_from {source}: no crop"]
        )
    # Dimmed and framed: the stand-in crop must not be mistaken for this frame's own face.
    tile = (_fit(track.crops[view][index], size).astype(np.float32) * 0.6 + 40).astype(np.uint8)
    cv2.rectangle(tile, (0, 0), (size - 1, size - 1), FILLED, 2)
    _text(tile, f"filled from {source}", 2, size - 2 * LINE - 2, (0, 0, 0), FILLED, max_width=size - 6)
    _text(tile, reason, 2, size - LINE - 2, TEXT, BACKGROUND, max_width=size - 6)
    return tile


def _status_line(row: dict[str, Any] | None) -> tuple[str, tuple[int, int, int]]:
    if row is None:
        return "no row", MUTED
    status = row.get("status") or ("face" if row["has_face"] else "none")
    if row["has_face"]:
        text = f"{status} ({row['origin']})" if row.get("origin") else status
        return text, TEXT
    reason = row.get("reason") or "no face"
    if status == "filled":
        return f"filled <- {row.get('fill_from')}: {reason}", FILLED
    return f"{status}: {reason}", REJECTED if _box(row) is not None else MUTED


def _info_line(row: dict[str, Any] | None) -> str:
    """Score, pose and sharpness where measured (rejected faces keep theirs)."""
    if row is None:
        return ""
    parts = []
    if row.get("score") is not None:
        parts.append(f"det {row['score']:.2f}")
    pose = [row.get(name) for name in ("yaw", "pitch", "roll")]
    if all(v is not None for v in pose):
        parts.append("ypr {:+.0f}/{:+.0f}/{:+.0f}".format(*pose))
    if row.get("sharpness") is not None:
        parts.append(f"sharp {row['sharpness']:.0f}")
    return " | ".join(parts) if parts else "-"


# ---------------------------------------------------------------- the sheet


def _draw_title(
    canvas: np.ndarray,
    video_path: Path,
    n_frames: int,
    info: VideoInfo,
    frames: list[int],
    tables: dict[str, pl.DataFrame],
    tracks: list[_Track],
) -> None:
    width = canvas.shape[1] - 2 * PAD
    rate = f" at {info.fps:.2f} fps" if info.fps > 0 else ""
    # A table shorter than the container says is worth seeing (a preview run, or a truncated video).
    count = info.container_frame_count
    container = f" (container: {count})" if count and count != n_frames else ""
    sampled = ", ".join(map(str, frames)) if frames else "none"
    _text(
        canvas,
        f"{video_path.name}: {n_frames} frames{container}{rate} | columns: frames {sampled}",
        PAD,
        PAD,
        max_width=width,
    )
    y = PAD + LINE
    for track in tracks:
        _text(canvas, _track_summary(track.name, tables[track.name]), PAD, y, track.colour, max_width=width)
        y += LINE
    legend = (
        "box: solid = detected, dashed = tracked, red x = rejected | dots: 68 landmarks, yellow = 5 points"
        " | tiles: aligned crops per view (orange = filled from another frame)"
    )
    _text(canvas, legend, PAD, y, MUTED, max_width=width)


def _draw_column(
    canvas: np.ndarray,
    layout: SheetLayout,
    column: int,
    frame: int,
    rgb: np.ndarray | None,
    fps: float,
    tracks: list[_Track],
) -> None:
    x0, width = layout.column_x(column), layout.thumb_width
    time = f" | {frame / fps:.2f} s" if fps > 0 else ""
    _text(canvas, f"frame {frame}{time}", x0, layout.title_height, TEXT, max_width=width)

    y0, height = layout.thumb_y, layout.thumb_height
    if rgb is None:
        thumb = _grey_tile(width, height, ["not decoded"])
    else:
        thumb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        scale = width / rgb.shape[1]
        for track in tracks:
            row = track.rows.get(frame)
            if row is not None:
                _draw_track_on_thumb(thumb, track, row, scale)
    canvas[y0 : y0 + height, x0 : x0 + width] = thumb

    for track in tracks:
        y = layout.track_y(track.name)
        row = track.rows.get(frame)
        status, colour = _status_line(row)
        used = _text(canvas, track.name, x0, y, (0, 0, 0), track.colour, max_width=width // 2)
        _text(canvas, status, x0 + used + 2, y, colour, max_width=width - used - 2)
        y += LINE
        size = layout.tile_size(track.name)
        if size:
            for i, view in enumerate(track.crops):
                tile = _crop_tile(track, view, row, size)
                _text(tile, view, 1, 1, TEXT, BACKGROUND, max_width=size - 4)
                x = x0 + i * (size + GAP)
                canvas[y : y + size, x : x + size] = tile
            y += size + GAP
        _text(canvas, _info_line(row), x0, y, MUTED, max_width=width)


def draw_contact_sheet(
    video_path: Path,
    tables: dict[str, pl.DataFrame],
    crops: dict[str, dict[str, np.ndarray]],
    out_path: Path,
    count: int = 8,
    thumb_width: int = 320,
) -> Path:
    """Draw a video's contact sheet (see the module docstring) and write it as a PNG.

    Args:
        video_path: the raw video the tables were made from.
        tables: {track: face table} (schema: `pipeline.faces.table`), one row per timeline frame.
        crops: {track: {view: uint8 [M, S, S, 3]}}, crop i of a view belonging to the i-th has_face row of
            the track's table; a track without an entry gets no crop tiles.
        out_path: the PNG to write (parent folders are created; written atomically).
        count: number of frames (columns) to show; fewer when the video is shorter.
        thumb_width: width of each column's frame thumbnail, pixels.

    Returns:
        out_path.

    Raises:
        ValueError: a track's crops do not match its has_face rows, or crops of a track without a table.
        VideoOpenError: the video cannot be opened.
    """
    if count < 1 or thumb_width < 32:
        raise ValueError(f"expected count >= 1 and thumb_width >= 32, got {count} and {thumb_width}")
    video_path, out_path = Path(video_path), Path(out_path)
    info = probe(video_path)
    n_frames = _n_frames(tables, info.container_frame_count)
    frames = sample_frames(n_frames, count)
    tracks = _prepare_tracks(tables, crops, frames)
    layout = sheet_layout(
        (info.width, info.height), len(frames), thumb_width, {t.name: t.crops for t in tracks}
    )

    canvas = np.empty((layout.height, layout.width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    _draw_title(canvas, video_path, n_frames, info, frames, tables, tracks)
    if not frames:
        _text(canvas, "no frames", layout.column_x(0), layout.thumb_y, MUTED)

    # One streaming pass; stop after the last sampled frame. Sampled frames the decoder never reaches (the
    # tables run past the video's end) stay "not decoded".
    column_of = {frame: i for i, frame in enumerate(frames)}
    drawn: set[int] = set()
    decoder = TimelineDecoder(video_path)
    try:
        for index, rgb in decoder if frames else ():  # (no frames: do not even open the video)
            if index in column_of:
                _draw_column(canvas, layout, column_of[index], index, rgb, info.fps, tracks)
                drawn.add(index)
            if len(drawn) == len(frames):
                break
    finally:
        decoder.close()
    for frame in frames:
        if frame not in drawn:
            _draw_column(canvas, layout, column_of[frame], frame, None, info.fps, tracks)

    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV could not encode the contact sheet of {video_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, out_path)  # readers never see a half-written PNG
    return out_path
