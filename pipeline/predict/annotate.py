"""An annotated copy of a video: each frame with its people's boxes, ids, expressions and valence-arousal.

One streaming pass (`pipeline.datasets.video.TimelineDecoder`), so memory stays flat however long the video
is; the prediction table is grouped by frame once before the pass. The output has exactly one frame per
timeline index: a frame that did not decode becomes a grey frame that says so. The file is H.264 in MP4
(yuv420p, through PyAV's libx264), which browsers and the HTML report play.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import polars as pl
from tqdm import tqdm

from pipeline.datasets.video import TimelineDecoder, probe
from pipeline.predict.summary import EXPRESSIONS

DEFAULT_FPS = 25.0  # when the container does not know its frame rate
FONT = cv2.FONT_HERSHEY_SIMPLEX
GREY = (150, 150, 150)  # BGR
# One colour per person (BGR), cycled: distinct on most footage and for red-green colour blindness.
PERSON_COLOURS = ((255, 170, 0), (0, 200, 255), (255, 0, 200), (0, 220, 0), (80, 80, 255), (255, 255, 0))
ROW_COLUMNS = (
    "face_id",
    "face_found",
    "face_filled",
    "face_rejected",
    "face_reason",
    "FaceRectX",
    "FaceRectY",
    "FaceRectWidth",
    "FaceRectHeight",
    "expression",
    "valence",
    "arousal",
)


def _rows_by_frame(table: pl.DataFrame) -> dict[int, list[dict]]:
    """frame -> that frame's rows (only the columns drawn, plus `top`/`top_p`: the decided expression and
    its probability), built once in O(rows)."""
    columns = [c for c in ROW_COLUMNS if c in table.columns]
    probs = [name for name in EXPRESSIONS if name in table.columns]
    rows = table.select("frame", *columns, *probs).sort("frame", "face_id")
    out: dict[int, list[dict]] = {}
    for row in rows.iter_rows(named=True):
        values = {name: row[name] for name in probs if row[name] is not None}
        top = row.get("expression")
        if top is None and values:  # no decision column: the most probable class
            top = max(values, key=lambda k: values[k])
        row["top"] = top.lower() if top else None
        row["top_p"] = values.get(row["top"]) if row["top"] else None
        for name in probs:
            del row[name]
        out.setdefault(row.pop("frame"), []).append(row)
    return out


def _text(
    image: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int]
) -> int:
    """Draw `text` with its baseline-left at `org` on a dark background (readable on any footage); returns
    the height of the line in pixels."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    cv2.rectangle(image, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)
    return h + base + 4


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_label(text: str, box: tuple[int, int, int, int], size: tuple[int, int], scale: float, taken: list):
    """Baseline-left (x, y) of a box's label: above the box, else below it, else inside its top edge; the
    first that fits the frame and covers no rectangle in `taken` (the label's is appended to it)."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    x1, y1, _, y2 = box
    width, height = size
    x = max(2, min(x1 + 2, width - w - 3))  # shifted left rather than cut at the right edge
    candidates = [y1 - 4 - base, y2 + h + 5, y1 + h + 4]
    fits = [y for y in candidates if y - h - 3 >= 0 and y + base <= height] or candidates[-1:]
    y = next(
        (y for y in fits if not any(_overlaps((x - 2, y - h - 3, x + w + 2, y + base), r) for r in taken)),
        fits[0],
    )
    taken.append((x - 2, y - h - 3, x + w + 2, y + base))
    return x, y


def _dashed_rectangle(image: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], colour, dash: int = 6):
    """A rectangle drawn in dashes (cv2 has no dashed line)."""
    (x1, y1), (x2, y2) = p1, p2
    for x in range(x1, x2, 2 * dash):
        cv2.line(image, (x, y1), (min(x + dash, x2), y1), colour, 1)
        cv2.line(image, (x, y2), (min(x + dash, x2), y2), colour, 1)
    for y in range(y1, y2, 2 * dash):
        cv2.line(image, (x1, y), (x1, min(y + dash, y2)), colour, 1)
        cv2.line(image, (x2, y), (x2, min(y + dash, y2)), colour, 1)


def _gauge(
    image: np.ndarray, x: int, y: int, size: int, valence: float, arousal: float, colour, scale: float
):
    """A valence-arousal square at top-left (x, y): axes through the centre, a dot at (valence, arousal)
    (valence to the right, arousal up, both in [-1, 1])."""
    cv2.rectangle(image, (x, y), (x + size, y + size), (30, 30, 30), cv2.FILLED)
    cv2.rectangle(image, (x, y), (x + size, y + size), (200, 200, 200), 1)
    mid = size // 2
    cv2.line(image, (x + 2, y + mid), (x + size - 2, y + mid), (110, 110, 110), 1)
    cv2.line(image, (x + mid, y + 2), (x + mid, y + size - 2), (110, 110, 110), 1)
    if size >= 36:  # axis letters where they fit: V below the right end, A left of the top, corners apart
        small = 0.55 * scale
        cv2.putText(image, "V", (x + size - 10, y + mid + 12), FONT, small, (170, 170, 170), 1, cv2.LINE_AA)
        cv2.putText(image, "A", (x + mid - 11, y + 11), FONT, small, (170, 170, 170), 1, cv2.LINE_AA)
    v, a = float(np.clip(valence, -1, 1)), float(np.clip(arousal, -1, 1))
    centre = (x + mid + int(round(v * (mid - 3))), y + mid - int(round(a * (mid - 3))))
    cv2.circle(image, centre, max(3, size // 10), colour, cv2.FILLED, cv2.LINE_AA)


def _draw_person(image: np.ndarray, row: dict, scale: float, taken: list) -> None:
    """Box, label and gauge of one row that has a box (`taken`: rectangles labels must not cover)."""
    height, width = image.shape[:2]
    x1 = int(round(row["FaceRectX"]))
    y1 = int(round(row["FaceRectY"]))
    x2 = x1 + int(round(row["FaceRectWidth"]))
    y2 = y1 + int(round(row["FaceRectHeight"]))
    x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2, width - 1))
    y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2, height - 1))
    face_id = row["face_id"]
    found = bool(row.get("face_found"))
    colour = PERSON_COLOURS[face_id % len(PERSON_COLOURS)] if found else GREY
    if found:
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
    else:
        _dashed_rectangle(image, (x1, y1), (x2, y2), GREY)

    label = f"id {face_id}"
    if not found:
        label += " rejected" if row.get("face_rejected") else " filled" if row.get("face_filled") else ""
    if row["top"]:
        label += f" {row['top']}" + (f" {row['top_p']:.2f}" if row["top_p"] is not None else "")
    elif row.get("face_rejected") and row.get("face_reason"):
        label += f" ({row['face_reason']})"
    _text(image, label, _place_label(label, (x1, y1, x2, y2), (width, height), scale, taken), scale, colour)

    valence, arousal = row.get("valence"), row.get("arousal")
    if valence is None or arousal is None or np.isnan(valence) or np.isnan(arousal):
        return
    size = int(np.clip(0.45 * (y2 - y1), 28, 0.3 * height))
    gx = x2 + 4 if x2 + 4 + size < width else x1 - 4 - size  # right of the box, else left of it
    gx = max(0, min(gx, width - size - 1))
    gy = max(0, min(y1, height - size - 1))
    _gauge(image, gx, gy, size, valence, arousal, colour, scale)
    taken.append((gx, gy, gx + size, gy + size))  # later labels keep clear of the gauge


def annotate_frame(image: np.ndarray, index: int, rows: list[dict], fps: float) -> np.ndarray:
    """Draw one frame's rows on a BGR uint8 [H, W, 3] frame (in place; also returned): a header with the
    frame and time, each row with a box, and a "no face" line per person without one."""
    height, width = image.shape[:2]
    scale = max(0.35, min(width, height) / 480)
    header = f"frame {index}  {index / fps:.2f} s"
    (_, text_h), _ = cv2.getTextSize(header, FONT, scale, 1)
    y = 6 + text_h
    step = _text(image, header, (6, y), scale, (255, 255, 255))
    notes = [] if any(row.get("face_found") for row in rows) else ["no face"]
    for row in rows:
        if row.get("FaceRectX") is None or row.get("FaceRectWidth") is None:
            if row.get("face_id") is not None:
                reason = row.get("face_reason")
                notes.append(
                    f"id {row['face_id']}: no face"
                    + (f" ({reason})" if reason not in (None, "no_face") else "")
                )
    # The corner notes first, so that person labels keep clear of them.
    taken = []
    for text in [header, *notes]:
        (w, _), base = cv2.getTextSize(text, FONT, scale, 1)
        taken.append((0, y - text_h - 3, w + 10, y + base))
        if text is not header:
            _text(image, text, (6, y), scale, (60, 160, 255))
        y += step
    for row in rows:
        if row.get("FaceRectX") is not None and row.get("FaceRectWidth") is not None:
            _draw_person(image, row, scale, taken)
    return image


def undecoded_frame(index: int, width: int, height: int) -> np.ndarray:
    """A grey BGR [H, W, 3] frame saying that timeline frame `index` did not decode."""
    image = np.full((height, width, 3), 90, np.uint8)
    scale = max(0.35, min(width, height) / 480)
    text = f"frame {index} did not decode"
    (w, h), _ = cv2.getTextSize(text, FONT, scale, 1)
    cv2.putText(
        image, text, ((width - w) // 2, (height + h) // 2), FONT, scale, (230, 230, 230), 1, cv2.LINE_AA
    )
    return image


class H264Writer:
    """Frames (BGR uint8 [H, W, 3]) into an H.264 MP4 with PyAV; odd sizes are padded to even (yuv420p
    needs even sides)."""

    def __init__(self, path: Path, rate: float, width: int, height: int) -> None:
        self.path = path
        self.width, self.height = width + width % 2, height + height % 2
        if path.is_dir():  # FFmpeg would only fail at the first write, with no file name
            raise IsADirectoryError(f"cannot write a video to {path}: it is a folder")
        try:
            self.container = av.open(str(path), "w")
        except (OSError, av.error.FFmpegError) as error:
            raise OSError(f"cannot open a video writer for {path} ({error})") from error
        self.stream = self.container.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "23", "preset": "veryfast"}

    def write(self, image: np.ndarray) -> None:
        pad_y, pad_x = self.height - image.shape[0], self.width - image.shape[1]
        if pad_x or pad_y:
            image = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        try:
            self.container.mux(self.stream.encode(frame))
        except (OSError, av.error.FFmpegError) as error:
            raise OSError(f"writing {self.path} failed ({error})") from error

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))  # flush the encoder's delayed frames
        finally:
            self.container.close()


def write_annotated_video(
    video_path: Path | str,
    table: pl.DataFrame,
    out_path: Path | str,
    *,
    fps: float | None = None,
    progress: bool = True,
) -> int:
    """Write an annotated MP4 (H.264) of `video_path` with the prediction table's boxes and outputs.

    Args:
        video_path: the video the table was predicted from.
        table: its prediction table (`pipeline.predict.table`; task columns may be absent).
        out_path: the MP4 to write (its folder is created).
        fps: the output frame rate; default the container's (25 when it does not know).
        progress: show a tqdm bar.

    Returns:
        The number of frames written: one per timeline index (through the last decoded frame or the table's
        last frame, whichever is later).

    Raises:
        VideoOpenError: the video cannot be opened.
        OSError: no video writer can be opened for `out_path`.
    """
    info = probe(video_path)
    rate = float(fps) if fps else (info.fps if info.fps > 0 else DEFAULT_FPS)
    width, height = info.width, info.height
    if width <= 0 or height <= 0:
        raise ValueError(f"{video_path}: the container reports a frame size of {width}x{height}")
    rows = _rows_by_frame(table) if table.height else {}
    last_row = max(rows) if rows else -1

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = H264Writer(out_path, rate, width, height)
    written = 0
    total = max(info.container_frame_count, last_row + 1) or None
    bar = tqdm(
        total=total,
        desc=f"annotate {Path(video_path).name}",
        unit="frame",
        disable=None if progress else True,
    )
    try:
        for index, rgb in TimelineDecoder(video_path):
            if rgb is None:
                image = undecoded_frame(index, width, height)
            else:
                image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                if image.shape[:2] != (height, width):  # a writer takes one size only
                    image = cv2.resize(image, (width, height))
                annotate_frame(image, index, rows.get(index, []), rate)
            writer.write(image)
            written += 1
            bar.update()
        # The table knows frames past the last one that decoded here: they did not decode either.
        for index in range(written, last_row + 1):
            writer.write(undecoded_frame(index, width, height))
            written += 1
            bar.update()
    finally:
        bar.close()
        writer.close()
    return written
