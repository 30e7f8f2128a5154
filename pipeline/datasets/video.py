"""Streaming video decode with OpenCV, on a frame timeline that damaged packets cannot shift.

Frame indices come from the stream's clock, not from the position of a frame among the frames that decode:
after each successful `read()`, OpenCV's FFmpeg backend reports in `CAP_PROP_POS_MSEC` the presentation
time of the frame just decoded (relative to the stream start). Measured on MJPG / XVID / mp4v in .avi and
.mp4 and on the H.264 fixture clips: a damaged packet either decodes with concealment artefacts (same time
stamp, so same index), or makes `read()` return False once (the packet is consumed, the next frame keeps its
true time stamp), so a missing frame becomes a gap in the timeline instead of shifting every later frame.

The rule (`FrameClock`) is per step: index = previous index + max(1, round(dt / frame duration)), where dt is
the time since the previous frame placed by its time stamp and the frame duration is 1 / the container's
fps. It is per step, not `round(t * fps)`, because variable-frame-rate clips (the .mov fixtures mix 30 and
24 fps steps, with one of 13.7 ms, under a container fps of 26.4) would otherwise collide or leave false
gaps: the per-step rule numbers every clean fixture clip exactly as counting decoded frames does. A frame
whose time stamp does not advance (duplicate or backwards) is counted as one frame; a gap that would run
past the container's frame count (or past 60 s when the count is unknown) is not believed either, and
frames are counted until the stamps make sense again. Without usable time stamps (fps unknown, or
POS_MSEC always 0) frames are counted, each failed read standing for one lost frame, and `Timeline.clock`
says "counting".

AVI needs one more step. FFmpeg's AVI reader numbers packets as it reads them: a damaged chunk *header*
(the 8 bytes before the frame data) makes it skip the whole chunk without any error, and every later
time stamp is one frame early (measured: 113 of 114 frames decode, frames 55..113 come out as 54..112).
The AVI `idx1` index still records where every chunk is, so `_avi_delivered_frames` replays the reader over
the index and maps the reader's packet numbers back to the container's frame numbers.

Decoding carries on past failed reads (up to `MAX_FAILED_READS` in a row while the container's frame count
says frames remain, `END_FAILED_READS` past it, so a finished stream ends at once), and is streamed one frame
at a time so that memory stays flat however long the video is (py-feat users reported per-frame time
growing from 1 s to 3 s and crashes from accumulated frames).
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAX_FPS = 1000.0  # a container fps above this is a broken header, not a frame rate: count frames instead
MAX_GAP_SECONDS = 60.0  # without a container frame count, a longer time stamp jump is not believed
MAX_FAILED_READS = 250  # consecutive failed reads tolerated while the container says frames remain
END_FAILED_READS = 3  # ... and once the container's frame count is reached (a finished stream)


class VideoOpenError(OSError):
    """OpenCV could not open a video file (missing, unreadable, or no decodable video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (read without decoding frames).

    Attributes:
        path: the video file.
        fps: frames per second as reported by the container (0.0 when unknown).
        width: frame width in pixels.
        height: frame height in pixels.
        container_frame_count: `CAP_PROP_FRAME_COUNT`; a hint only, use `read_timeline` for truth.
    """

    path: Path
    fps: float
    width: int
    height: int
    container_frame_count: int


@dataclass(frozen=True)
class Timeline:
    """The frame timeline of one decoded video.

    Attributes:
        path: the video file.
        n_frames: timeline length = last decoded index + 1 (0 when nothing decodes). Frames the container
            may list after the last decoded one are not on the timeline.
        missing: indices in 0..n_frames-1 that did not decode, ascending.
        clock: "timestamps" (indices from the stream's time stamps) or "counting" (no usable time stamps:
            indices count decoded frames and failed reads).
        fps: the container's frame rate (0.0 when unknown).
        container_frame_count: what the container claims (a hint; 0 when unknown).
        failed_reads: `read()` calls that returned no frame before the last decoded frame.
        timestamp_anomalies: decoded frames placed by counting because their time stamp did not advance or
            jumped too far to believe.
        lost_packets: AVI frames the demuxer skipped without a trace (damaged chunk headers), found through
            the AVI index; they are in `missing` at their true index.
    """

    path: Path
    n_frames: int
    missing: tuple[int, ...]
    clock: str
    fps: float
    container_frame_count: int
    failed_reads: int = 0
    timestamp_anomalies: int = 0
    lost_packets: int = 0

    @property
    def n_decoded(self) -> int:
        """Frames that actually decoded."""
        return self.n_frames - len(self.missing)

    def describe(self) -> str | None:
        """One line for the log when the timeline has gaps or no usable clock, else None."""
        notes = []
        if self.missing:
            last = f"0..{self.n_frames - 1}"
            notes.append(
                f"frames {format_indices(self.missing)} of {last} did not decode; "
                "kept as missing, labels stay on their frames"
            )
        if self.lost_packets:
            notes.append(f"{self.lost_packets} of them skipped by the AVI reader (damaged chunk header)")
        if self.clock == "counting" and self.n_decoded > 1:
            notes.append("no usable time stamps: frames numbered in decode order")
        if self.timestamp_anomalies and self.clock == "timestamps":
            notes.append(f"{self.timestamp_anomalies} frame(s) with a bad time stamp placed by counting")
        return f"{self.path}: {'; '.join(notes)}" if notes else None


def format_indices(indices: Sequence[int], limit: int = 20) -> str:
    """'3, 7-9, 12' for [3, 7, 8, 9, 12]; runs beyond `limit` are summarised as '... (N frames in all)'."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:limit])
    if len(runs) > limit:
        text += f", ... ({len(indices)} frames in all)"
    return text


class FrameClock:
    """Turns the time stamp of each decoded frame into its timeline index (the per-step rule above).

    Steps are measured from the last frame placed by its own time stamp (the anchor): normally the previous
    frame; after frames with unusable stamps (placed by counting) an older one, so that the time stamps take
    over again as soon as they run ahead of the count.
    """

    def __init__(self, fps: float, container_frame_count: int = 0) -> None:
        usable = math.isfinite(fps) and 0.0 < fps <= MAX_FPS
        self.frame_ms = 1000.0 / fps if usable else None  # None: count frames
        self.limit = container_frame_count if container_frame_count > 0 else None
        self.max_gap = int(MAX_GAP_SECONDS * fps) if usable else 0
        self.index = -1  # index of the last placed frame
        self.anchor: tuple[int, float] | None = None  # (index, time stamp) of the last frame placed by time
        self.anomalies = 0
        self.advanced = False  # whether any time stamp advanced (False for POS_MSEC stuck at 0)

    @property
    def clock(self) -> str:
        """'timestamps' or 'counting' (no fps, or time stamps that never advanced)."""
        if self.frame_ms is None or (self.index > 0 and not self.advanced):
            return "counting"
        return "timestamps"

    def place(self, t_ms: float, failed_reads: int = 0) -> int:
        """Index of the next decoded frame.

        Args:
            t_ms: its time stamp (`CAP_PROP_POS_MSEC` right after the `read()` that returned it).
            failed_reads: failed `read()` calls since the previous decoded frame; used only when counting
                (each then stands for one lost frame), the time stamps say how many frames are missing.

        Returns:
            An index strictly greater than the previous one.
        """
        counted = self.index + 1 + failed_reads  # where counting would put the frame
        if self.frame_ms is None or not math.isfinite(t_ms):
            self.index = counted
            return counted
        if self.anchor is None:
            # A late first time stamp after failed reads: the first frames did not decode. Without failed
            # reads it is where the stream starts (e.g. a leading frame the decoder never outputs): frame 0.
            estimate = max(0, round(t_ms / self.frame_ms)) if failed_reads else 0
        elif t_ms > self.anchor[1]:
            self.advanced = True
            anchor_index, anchor_ms = self.anchor
            estimate = anchor_index + max(1, round((t_ms - anchor_ms) / self.frame_ms))
        else:
            # Duplicate or backwards time stamp: it cannot place the frame, counting can.
            if t_ms != 0.0 or self.anchor[1] != 0.0:  # all-zero time stamps are "counting", not anomalies
                self.anomalies += 1
            self.index = counted
            return counted
        if estimate > self.index + 1 and not self._believable(estimate):
            self.anomalies += 1  # a jump past the container's end is a broken time stamp, not lost frames
            self.index = counted
            return counted
        if estimate > self.index:
            self.anchor = (estimate, t_ms)
        # else: frames counted since the anchor took this slot; keep the anchor until the stamps catch up
        self.index = max(estimate, self.index + 1)
        return self.index

    def _believable(self, index: int) -> bool:
        if self.limit is not None:
            return index < self.limit
        return index - self.index - 1 <= self.max_gap


def _open(path: Path | str) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise VideoOpenError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise VideoOpenError(f"video file is empty (0 bytes): {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoOpenError(f"OpenCV cannot open video (corrupt, truncated or not a video?): {path}")
    return capture


def probe(path: Path | str) -> VideoInfo:
    """Read the container's metadata.

    Raises:
        VideoOpenError: the file is missing or OpenCV cannot open it.
    """
    capture = _open(path)
    try:
        return VideoInfo(
            path=Path(path),
            fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            container_frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
        )
    finally:
        capture.release()


class TimelineDecoder:
    """One streaming pass over a video's frame timeline.

    Iterate once: yields `(index, rgb)` for every timeline index 0..n_frames-1 in order, `rgb` an RGB uint8
    [H, W, 3] frame, or None for a frame that did not decode (it keeps its index). After the loop ran to
    the end, `timeline` describes what was decoded. Both the frames and the faces stage number frames
    through this class, so their tables agree by construction.

    Memory is constant: nothing is kept between frames. The capture is released when the loop finishes,
    raises, or is closed early (`close()`).

    Raises (on the first `next`):
        VideoOpenError: the file is missing, empty, or OpenCV cannot open it.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._frames: Generator[tuple[int, np.ndarray | None], None, None] | None = None
        self._timeline: Timeline | None = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        if self._frames is not None:
            raise RuntimeError(f"{self.path}: a TimelineDecoder can be iterated only once")
        self._frames = self._decode()
        return self._frames

    def close(self) -> None:
        """Stop decoding and release the capture (no-op when not started or already finished)."""
        if self._frames is not None:
            self._frames.close()

    @property
    def timeline(self) -> Timeline:
        """The decoded timeline; only known once the loop has run to the end."""
        if self._timeline is None:
            raise RuntimeError(f"{self.path}: the timeline is known only after decoding to the end")
        return self._timeline

    def _decode(self) -> Generator[tuple[int, np.ndarray | None], None, None]:
        capture = _open(self.path)
        try:
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
            clock = FrameClock(fps, count)
            delivered = _avi_delivered_frames(self.path)  # None unless an AVI chunk is lost
            last = -1  # last yielded index
            missing: list[int] = []
            failed_run = failed_reads = 0
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    failed_run += 1
                    # Past the container's count a failed read means the end; before it, a damaged packet.
                    remaining = count == 0 or clock.index + failed_run < count
                    if failed_run > (MAX_FAILED_READS if remaining else END_FAILED_READS):
                        break
                    continue
                raw = clock.place(float(capture.get(cv2.CAP_PROP_POS_MSEC)), failed_run)
                failed_reads += failed_run
                failed_run = 0
                index = raw
                if delivered is not None:  # AVI reader's packet number -> container frame number
                    beyond = raw - len(delivered)  # (not expected: the replay predicts every packet)
                    index = delivered[raw] if beyond < 0 else delivered[-1] + 1 + beyond
                index = max(index, last + 1)
                for gap in range(last + 1, index):
                    missing.append(gap)
                    yield gap, None
                last = index
                # OpenCV decodes to BGR; everything downstream (dlib, models, saved crops) works in RGB.
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            lost = 0 if delivered is None else last + 1 - len(set(delivered) & set(range(last + 1)))
            self._timeline = Timeline(
                path=self.path,
                n_frames=last + 1,
                missing=tuple(missing),
                clock=clock.clock,
                fps=fps,
                container_frame_count=count,
                failed_reads=failed_reads,
                timestamp_anomalies=clock.anomalies,
                lost_packets=lost,
            )
        finally:
            capture.release()


def iter_frames(path: Path | str) -> Iterator[tuple[int, np.ndarray]]:
    """Yield the frames that decode, one at a time, at their timeline index.

    Indices are strictly increasing and may have gaps (frames that did not decode); see `TimelineDecoder`
    for every timeline index including the missing ones.

    Yields:
        (index, frame): timeline index and the frame as RGB uint8 [H, W, 3].

    Raises:
        VideoOpenError: the file is missing or OpenCV cannot open it (raised on the first `next`).
    """
    decoder = TimelineDecoder(path)
    try:
        for index, rgb in decoder:
            if rgb is not None:
                yield index, rgb
    finally:
        decoder.close()


def read_timeline(path: Path | str) -> Timeline:
    """Decode a whole video (constant memory) and return its timeline.

    Uses `read()` rather than the faster `grab()` so that the result is, by construction, what
    `TimelineDecoder` / `iter_frames` give (a frame can grab but fail to decode).
    """
    decoder = TimelineDecoder(path)
    for _ in decoder:
        pass
    return decoder.timeline


# ---------------------------------------------------------------- AVI index


def _avi_delivered_frames(path: Path) -> list[int] | None:
    """For an AVI whose reader will skip some video chunks: the container frame number of each video packet
    FFmpeg's sequential AVI reader delivers, in order. None when the file is not a RIFF AVI, has no usable
    `idx1` index, or every indexed video chunk is intact (the common case: packet number = frame number).

    How FFmpeg reads an AVI (libavformat/avidec.c, checked against damaged files): chunk after chunk; a
    chunk whose header is not a valid chunk header is skipped by scanning to the next valid header; a
    valid-looking header with a wrong size swallows whatever that size covers.
    """
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _replay_avi_reader(data)
    except (OSError, ValueError, struct.error):
        return None  # unreadable or not mappable: no correction, the time stamps stand


def _replay_avi_reader(data: mmap.mmap) -> list[int] | None:
    size = len(data)
    if size < 12 or data[0:4] != b"RIFF" or data[8:12] != b"AVI ":
        return None
    movi = index_at = index_size = None
    pos = 12
    while pos + 8 <= size:  # top-level chunks: LIST hdrl, LIST movi, idx1, JUNK, ...
        tag, length = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if tag == b"LIST" and data[pos + 8 : pos + 12] == b"movi":
            movi = pos + 8  # idx1 offsets are usually relative to the 'movi' fourcc
        elif tag == b"idx1":
            index_at, index_size = pos + 8, min(length, size - pos - 8)
        pos += 8 + length + (length & 1)
    if movi is None or index_at is None or index_size is None:
        return None

    entries = []  # (chunk id, offset, size) of every stream chunk ('00dc', '01wb', ...), in index order
    for at in range(index_at, index_at + index_size - 15, 16):
        chunk_id, _, offset, length = struct.unpack_from("<4sIII", data, at)
        if chunk_id[:2].isdigit():
            entries.append((chunk_id, offset, length))
    video_streams = sorted({c[:2] for c, _, _ in entries if c[2:4] in (b"dc", b"db")})
    if not video_streams:
        return None
    stream = video_streams[0]  # OpenCV reads the first video stream

    def intact(start: int, chunk_id: bytes, length: int) -> bool:
        return (
            start + 8 + length <= size
            and data[start : start + 4] == chunk_id
            and struct.unpack_from("<I", data, start + 4)[0] == length
        )

    # Absolute or 'movi'-relative offsets: take the base under which the index matches the file.
    matches = {base: sum(intact(base + o, c, n) for c, o, n in entries) for base in (movi, 0)}
    base = max(matches, key=lambda b: matches[b])
    if matches[base] == len(entries):
        return None  # nothing lost
    if matches[base] < 0.9 * len(entries):
        return None  # the index itself does not describe this file: trust the time stamps alone

    # Replay the reader over every stream's chunks (a damaged audio chunk can swallow video chunks too).
    delivered = []
    frame = -1  # container frame number of the current video chunk
    resume = 0  # where the reader goes on after the previous chunk
    for chunk_id, offset, _ in entries:
        is_video = chunk_id[:2] == stream and chunk_id[2:4] in (b"dc", b"db")
        frame += is_video
        start = base + offset
        if start < resume or start + 8 > size:
            continue  # swallowed by a previous chunk's wrong size, or past the end of a truncated file
        claimed = struct.unpack_from("<I", data, start + 4)[0]
        if data[start : start + 4] == chunk_id and start + 8 + claimed <= size:
            # A valid header: read as one packet; a wrong size swallows what it covers (or less).
            if is_video:
                delivered.append(frame)
            resume = start + 8 + claimed + (claimed & 1)
        # else: not a chunk header any more; the reader scans on to the next valid one
    return delivered or None
