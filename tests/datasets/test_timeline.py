"""Frame timeline: damaged, truncated and broken videos keep every decoded frame on its true index.

Synthetic videos are written in tmp_path with each frame i showing a bright block whose position encodes i
(two neighbouring frames differ by ~35 grey levels on average, lossy codecs move a frame by < 1), damaged
at the byte level, and decoded frames are compared pixel by pixel with the clean video's frame of the
same index.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from pipeline import artifacts
from pipeline.config import FramesConfig
from pipeline.datasets.affwild2 import LabelCountError
from pipeline.datasets.frames import index_video
from pipeline.datasets.video import (
    FrameClock,
    Timeline,
    TimelineDecoder,
    VideoOpenError,
    iter_frames,
    probe,
    read_timeline,
)

WIDTH, HEIGHT, FPS, N = 128, 96, 25, 114
BLOCK = 32
SAME = 3.0  # mean abs difference (grey levels) below which two decodes show the same frame
GOP = 12  # OpenCV's FFmpeg writer puts a keyframe every 12 frames (MJPG: every frame)
CODECS = [("avi", "MJPG"), ("avi", "XVID"), ("mp4", "mp4v")]
EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"


def pattern(i: int) -> np.ndarray:
    """Frame i (BGR uint8 [H, W, 3]): a white block at one of 12 positions, i mod 12, on grey."""
    frame = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    row, col = divmod(i % 12, 4)
    frame[row * BLOCK : (row + 1) * BLOCK, col * BLOCK : (col + 1) * BLOCK] = 250
    frame[:, WIDTH - 8 :] = (i * 7) % 200  # a side bar whose level also changes with i
    return frame


def write_video(path: Path, fourcc: str, n: int = N) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV cannot write {fourcc} to {path.suffix}")
    for i in range(n):
        writer.write(pattern(i))
    writer.release()
    return path


def decode(path: Path) -> tuple[dict[int, np.ndarray], Timeline]:
    decoder = TimelineDecoder(path)
    frames = {index: rgb for index, rgb in decoder if rgb is not None}
    return frames, decoder.timeline


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def avi_video_chunks(data: bytes) -> list[tuple[int, int]]:
    """(header offset, data size) of each `00dc` chunk, walking the `movi` list in file order."""
    movi = data.index(b"movi")
    end = movi - 4 + struct.unpack_from("<I", data, movi - 4)[0]
    chunks, pos = [], movi + 4
    while pos + 8 <= end:
        tag, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if tag == b"00dc":
            chunks.append((pos, size))
        pos += 8 + size + (size & 1)
    return chunks


def damage(data: bytearray, start: int, n: int) -> None:
    for j in range(start, start + n):
        data[j] = (data[j] * 7 + 13) & 255


def assert_on_true_indices(
    damaged: Path, clean: dict[int, np.ndarray], gop: int, must_miss: tuple[int, ...] = ()
) -> Timeline:
    """Every decoded frame of `damaged` shows the clean frame of its index, except in the group of pictures
    hit by the damage; frames decode past the damage up to the last one."""
    frames, timeline = decode(damaged)
    assert timeline.n_frames == N and timeline.clock == "timestamps"
    assert set(frames) | set(timeline.missing) == set(range(N)) and not set(frames) & set(timeline.missing)
    assert set(must_miss) <= set(timeline.missing)
    off = sorted([i for i, rgb in frames.items() if mad(rgb, clean[i]) > SAME] + list(timeline.missing))
    assert off, "the damage changed nothing: the test does not test"
    recovered = (off[-1] // gop + 1) * gop  # the next keyframe after the last affected frame
    # A shifted timeline would make every later frame differ, so `off` would run to the end.
    assert recovered - off[0] <= 2 * gop + len(must_miss), f"frames {off} differ from their clean twins"
    assert recovered <= N - 30 and all(i in frames for i in range(recovered, N))
    return timeline


@pytest.mark.parametrize(("ext", "fourcc"), CODECS)
def test_clean_video_numbers_every_frame(tmp_path: Path, ext: str, fourcc: str) -> None:
    path = write_video(tmp_path / f"clip.{ext}", fourcc)
    frames, timeline = decode(path)
    assert sorted(frames) == list(range(N)) and timeline.n_frames == N and timeline.missing == ()
    assert timeline.clock == "timestamps" and timeline.describe() is None
    for i, rgb in frames.items():  # each frame is the one written at its index
        assert mad(rgb, cv2.cvtColor(pattern(i), cv2.COLOR_BGR2RGB)) < 2 * SAME
        assert mad(rgb, cv2.cvtColor(pattern(i + 1), cv2.COLOR_BGR2RGB)) > 5 * SAME


@pytest.mark.parametrize(
    ("ext", "fourcc", "frame"), [("avi", "MJPG", 0), ("avi", "XVID", 0), *[(*c, 55) for c in CODECS]]
)
def test_damaged_packet_keeps_later_frames_on_their_index(
    tmp_path: Path, ext: str, fourcc: str, frame: int
) -> None:
    path = write_video(tmp_path / f"clip.{ext}", fourcc)
    clean, _ = decode(path)
    data = bytearray(path.read_bytes())
    if ext == "avi":
        header, size = avi_video_chunks(bytes(data))[frame]
        damage(data, header + 8 + size // 3, min(64, size // 3))  # inside the frame's compressed data
    else:
        damage(data, len(data) // 2, len(data) // N)  # the middle of the mdat box: about one frame's data
    damaged = tmp_path / f"damaged.{ext}"
    damaged.write_bytes(bytes(data))
    assert_on_true_indices(damaged, clean, gop=1 if fourcc == "MJPG" else GOP)


@pytest.mark.parametrize("fourcc", ["MJPG", "XVID"])
@pytest.mark.parametrize("field", ["tag", "size"])
def test_damaged_avi_chunk_header(tmp_path: Path, fourcc: str, field: str) -> None:
    """The issue's case: FFmpeg's AVI reader skips a chunk whose header is damaged, without an error, and
    numbers the packets after it one too early; the AVI index puts them back on their frames."""
    path = write_video(tmp_path / "clip.avi", fourcc)
    clean, _ = decode(path)
    data = bytearray(path.read_bytes())
    chunks = avi_video_chunks(bytes(data))
    header, size = chunks[55]
    if field == "tag":
        damage(data, header, 4)  # '00dc' no more: chunk 55 is skipped
        lost: tuple[int, ...] = (55,)
    else:
        # A plausible but wrong size: chunk 55 swallows the next three chunks.
        swallow_to = chunks[58][0] + 8 + 10
        struct.pack_into("<I", data, header + 4, swallow_to - header - 8)
        lost = (56, 57, 58)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    timeline = assert_on_true_indices(damaged, clean, gop=1 if fourcc == "MJPG" else GOP, must_miss=lost)
    assert timeline.lost_packets == len(lost)
    assert "did not decode" in timeline.describe() and "AVI" in timeline.describe()


@pytest.mark.parametrize("fourcc", ["MJPG", "XVID"])
def test_truncated_avi_ends_early_without_shift(tmp_path: Path, fourcc: str) -> None:
    path = write_video(tmp_path / "clip.avi", fourcc)
    clean, _ = decode(path)
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    frames, timeline = decode(truncated)
    assert probe(truncated).container_frame_count == N  # the header still claims every frame
    assert 40 < timeline.n_frames < N and timeline.missing == ()
    last = timeline.n_frames - 1  # the cut may fall inside the last frame's data
    assert all(mad(frames[i], clean[i]) < SAME for i in range(last))


def test_truncated_mp4_is_a_clear_error(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", "mp4v")
    truncated = tmp_path / "cut clip.mp4"
    truncated.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])  # the moov box is at the end
    with pytest.raises(VideoOpenError, match="cut clip.mp4"):
        read_timeline(truncated)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    with pytest.raises(VideoOpenError, match=r"empty \(0 bytes\): .*empty\.avi"):
        read_timeline(path)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("frame,label\n" * 200)
    with pytest.raises(VideoOpenError, match=r"cannot open video .*notes\.mp4"):
        next(iter_frames(path))


def test_mpeg1_last_time_stamp_is_zero(tmp_path: Path) -> None:
    """A real non-monotonic case: OpenCV reports POS_MSEC 0 for the last frame of an MPEG-1 stream (and a
    container count of 1): the frame is placed by counting, nothing crashes."""
    path = tmp_path / "clip.mpg"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"PIM1"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        pytest.skip("no MPEG-1 writer")
    for i in range(20):
        writer.write(pattern(i))
    writer.release()
    frames, timeline = decode(path)
    assert sorted(frames) == list(range(20)) and timeline.missing == ()
    assert timeline.timestamp_anomalies == 1 and "placed by counting" in timeline.describe()


# ---------------------------------------------------------------- the per-step rule


def place_all(clock: FrameClock, times: list[float], failed: list[int] | None = None) -> list[int]:
    return [clock.place(t, f) for t, f in zip(times, failed or [0] * len(times), strict=True)]


def test_clock_gaps_from_time_stamps() -> None:
    clock = FrameClock(25.0, 100)
    assert place_all(clock, [0, 40, 120, 160, 280]) == [0, 1, 3, 4, 7]
    assert clock.clock == "timestamps" and clock.anomalies == 0


def test_clock_start_offset_is_frame_zero_unless_reads_failed() -> None:
    assert place_all(FrameClock(25.0, 100), [80, 120, 160]) == [0, 1, 2]
    assert place_all(FrameClock(25.0, 100), [80, 120], [2, 0]) == [2, 3]


def test_clock_variable_frame_rate_is_not_a_gap() -> None:
    """The .mov fixtures: 30 fps and 24 fps stretches, one 13.7 ms step, container fps 26.4."""
    times = np.cumsum([0, 13.67, 41.67, 41.67, 33.33, 33.33, 30.01, 41.67]).tolist()
    assert place_all(FrameClock(26.4, 169), times) == list(range(8))


def test_clock_duplicate_and_backwards_time_stamps_count() -> None:
    clock = FrameClock(25.0, 100)
    assert place_all(clock, [0, 40, 40, 80, 40, 200]) == [0, 1, 2, 3, 4, 5]
    assert clock.anomalies == 2  # 200 ms is frame 5: the backwards stamp did not lower the clock


def test_clock_without_time_stamps_counts_failed_reads() -> None:
    zeros = FrameClock(25.0, 100)
    assert place_all(zeros, [0, 0, 0, 0], [0, 0, 2, 0]) == [0, 1, 4, 5]
    assert zeros.clock == "counting" and zeros.anomalies == 0
    no_fps = FrameClock(0.0, 0)
    assert place_all(no_fps, [0, 40, 500], [0, 1, 0]) == [0, 2, 3] and no_fps.clock == "counting"


def test_clock_does_not_believe_a_jump_past_the_container_end() -> None:
    clock = FrameClock(25.0, 10)
    assert place_all(clock, [0, 40, 3_600_000, 3_600_040]) == [0, 1, 2, 3]
    assert clock.anomalies == 2  # both frames after the jump are counted


# ---------------------------------------------------------------- frames stage and faces stage


def write_root(root: Path, video: Path, n_labels: int) -> Path:
    """An Aff-Wild2 root holding `video` as batch1/v1.avi and an EXPR file whose row k is k mod 8."""
    (root / "batch1").mkdir(parents=True)
    target = root / "batch1" / "v1.avi"
    target.write_bytes(video.read_bytes())
    labels = root / "EXPR_Classification_Challenge" / "Train_Set" / "v1.txt"
    labels.parent.mkdir(parents=True)
    labels.write_text("\n".join([EXPR_HEADER, *(str(k % 8) for k in range(n_labels))]) + "\n")
    return labels


def damaged_mjpg(tmp_path: Path) -> Path:
    """114-frame MJPG AVI whose chunk 55 lost its header (the issue's video)."""
    path = write_video(tmp_path / "clean.avi", "MJPG")
    data = bytearray(path.read_bytes())
    damage(data, avi_video_chunks(bytes(data))[55][0], 4)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    return damaged


def test_frames_stage_keeps_labels_on_their_frames(tmp_path: Path, capsys) -> None:
    from stages import frames

    root = tmp_path / "my data"  # a space in the data root
    write_root(root, damaged_mjpg(tmp_path), N + 1)  # Aff-Wild2's one extra last line
    out = tmp_path / "out"
    table = frames.run(root, out, FramesConfig(label_tolerance=1, force_label_alignment=False))
    printed = capsys.readouterr()
    assert "frames 55 of 0..113 did not decode; kept as missing, labels stay on their frames" in (
        printed.out + printed.err
    )
    assert "dropped the last 1 label row(s)" in printed.out

    row = table.row(0, named=True)
    assert (row["n_frames"], row["missing_frames"], row["video_path"]) == (N, 1, "batch1/v1.avi")
    index = pl.read_parquet(artifacts.frame_index(out, "v1"))
    assert index["frame"].to_list() == list(range(N))
    assert index["decoded"].to_list() == [i != 55 for i in range(N)]
    assert index["luma"][55] is None and index["luma"][56] is not None
    labels = pl.read_parquet(artifacts.labels_table(out, "v1"))
    assert labels["expr"].to_list() == [k % 8 for k in range(N)]  # row k stays on frame k


@pytest.mark.parametrize("extra", [50, -50])
def test_frames_stage_refuses_a_label_file_far_off(tmp_path: Path, capsys, extra: int) -> None:
    from stages import frames

    root = tmp_path / "my data"
    labels = write_root(root, write_video(tmp_path / "clip.avi", "MJPG"), N + extra)
    with pytest.raises(LabelCountError) as error:
        frames.run(root, tmp_path / "out", FramesConfig(label_tolerance=1, force_label_alignment=False))
    message = str(error.value)
    assert str(labels) in message and str(root / "batch1" / "v1.avi") in message
    assert f"{N + extra} label rows" in message and f"{N} frames" in message
    assert "frames.force_label_alignment: true" in message

    table = frames.run(root, tmp_path / "out", FramesConfig(label_tolerance=1, force_label_alignment=True))
    assert table["n_frames"].to_list() == [N]
    assert "WARNING: v1 [expr]" in capsys.readouterr().out
    aligned = pl.read_parquet(artifacts.labels_table(tmp_path / "out", "v1"))["expr"].to_list()
    assert aligned == [k % 8 if k < N + extra else -1 for k in range(N)]


def test_faces_table_has_a_row_per_timeline_frame(tmp_path: Path) -> None:
    from pipeline.faces.process import process_track

    path = write_video(tmp_path / "clean.avi", "MJPG", n=30)
    data = bytearray(path.read_bytes())
    damage(data, avi_video_chunks(bytes(data))[12][0], 4)  # frame 12's chunk header: the reader skips it
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    index, timeline = index_video(damaged)
    assert timeline.missing == (12,)
    result = process_track(damaged, "clip")
    assert result.table["frame"].to_list() == index["frame"].to_list() == list(range(30))
    assert not result.table["has_face"][12]
