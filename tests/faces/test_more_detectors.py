"""The detectors whose weights ship in a wheel: dlib's CNN MMOD, MediaPipe's BlazeFace, facenet-pytorch's
MTCNN, on sampled frames of the real fixture clips (../shared/fixtures/videos, read in place)."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from pipeline.faces.detectors import DETECTORS, create_detector

VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "videos"

# Settings that keep the file fast: MMOD costs about 7 µs per pixel here, so it sees 320×180 frames (the
# fixture faces are ~180 px tall at 640×360, still above MMOD's ~80 px smallest face after downscaling).
SETTINGS = {
    "dlib_mmod": {"max_side": 320},
    "blazeface": {},
    "mtcnn": {"max_side": 320},
}
NEW = sorted(SETTINGS)

pytestmark = pytest.mark.usefixtures("one_thread")


@cache
def sampled_frames(clip: str, count: int) -> tuple[np.ndarray, ...]:
    """`count` frames spread evenly over a fixture clip, RGB uint8."""
    path = VIDEOS / clip
    if not path.is_file():
        pytest.skip(f"{path} is absent (the fixture clips live in ../shared/fixtures/videos)")
    capture = cv2.VideoCapture(str(path))
    bgr_frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        bgr_frames.append(bgr)
    capture.release()
    assert bgr_frames, f"no frame decoded from {path}"
    picks = np.linspace(0, len(bgr_frames) - 1, count).round().astype(int)
    return tuple(cv2.cvtColor(bgr_frames[i], cv2.COLOR_BGR2RGB) for i in picks)


@cache
def detector(name: str):
    return create_detector(name, **SETTINGS[name])


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_the_new_detectors_are_registered() -> None:
    assert set(NEW) <= set(DETECTORS)


@pytest.mark.parametrize("name", NEW)
def test_finds_the_face_where_dlib_hog_does(name: str) -> None:
    hog = create_detector("dlib_hog")
    for rgb in sampled_frames("single_face.mp4", 3):
        (reference,) = hog(rgb)
        detections = detector(name)(rgb)
        assert detections, f"{name} found no face"
        best = detections[0]
        assert all(best.score >= d.score for d in detections)  # best first
        assert iou(best.box, reference.box) > 0.4, (name, best.box, reference.box)


@pytest.mark.parametrize("name", NEW)
def test_finds_nothing_without_a_face(name: str) -> None:
    for rgb in sampled_frames("no_face.mp4", 3):
        assert detector(name)(rgb) == []


@pytest.mark.parametrize("name", NEW)
def test_landmarks_are_inside_the_box_in_the_documented_order(name: str) -> None:
    rgb = sampled_frames("single_face.mp4", 3)[1]
    face = detector(name)(rgb)[0]
    if name in ("dlib_mmod", "blazeface"):
        # MMOD gives boxes only; BlazeFace has no mouth corners (its docstring says so).
        assert face.landmarks5 is None
        return
    points = face.landmarks5
    assert points.shape == (5, 2) and points.dtype == np.float32
    x1, y1, x2, y2 = face.box
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
    eyes, nose, mouth = points[:2], points[2], points[3:]
    assert eyes[0, 0] < nose[0] < eyes[1, 0]  # image-left eye first
    assert mouth[0, 0] < mouth[1, 0]  # image-left mouth corner first
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()  # eyes above the nose, nose above the mouth


def test_mtcnn_max_side_maps_boxes_and_landmarks_back() -> None:
    astronaut = data.astronaut()
    full = create_detector("mtcnn")(astronaut)[0]
    big = np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1)
    small = create_detector("mtcnn", max_side=512)(big)[0]
    np.testing.assert_allclose(np.array(small.box) / 2, full.box, atol=4)
    np.testing.assert_allclose(small.landmarks5 / 2, full.landmarks5, atol=3)


def test_min_score_filters() -> None:
    rgb = sampled_frames("single_face.mp4", 3)[0]
    assert create_detector("blazeface", min_score=1.0)(rgb) == []
    assert create_detector("mtcnn", min_score=1.0, max_side=320)(rgb) == []
    assert create_detector("dlib_mmod", min_score=5.0, max_side=160)(rgb) == []


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        ("dlib_mmod", {"upsample": -1}, ValueError, "upsample"),
        ("dlib_mmod", {"max_side": 0}, ValueError, "max_side"),
        ("dlib_mmod", {"upsampel": 1}, TypeError, "upsampel"),
        ("blazeface", {"model": 2}, ValueError, "short-range"),
        ("blazeface", {"min_score": 1.5}, ValueError, "min_score"),
        ("blazeface", {"max_side": 320}, TypeError, "max_side"),
        ("mtcnn", {"min_score": -0.1}, ValueError, "min_score"),
        ("mtcnn", {"min_face_size": 0}, ValueError, "min_face_size"),
        ("mtcnn", {"max_side": "big"}, ValueError, "max_side"),
        ("mtcnn", {"device": "cuda"}, TypeError, "device"),
    ],
)
def test_bad_keyword_arguments_are_named(name: str, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        create_detector(name, **kwargs)


def test_mmod_weights_path_is_checked(tmp_path: Path) -> None:
    missing = tmp_path / "mmod_human_face_detector.dat"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        create_detector("dlib_mmod", model=missing)
    missing.write_text("not a network")
    with pytest.raises(ValueError, match="not a dlib MMOD detector model"):
        create_detector("dlib_mmod", model=missing)


@pytest.mark.parametrize(
    ("name", "module", "install"),
    [
        ("dlib_mmod", "face_recognition_models", "pip install face-recognition-models==0.3.0"),
        ("blazeface", "mediapipe", "pip install --no-deps mediapipe==0.10.21"),
        ("mtcnn", "facenet_pytorch", "pip install --no-deps facenet-pytorch==2.6.0"),
    ],
)
def test_a_missing_package_is_named_with_its_install(
    name: str, module: str, install: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=f"'{name}' detector needs the `{module}` package.*{install}"):
        create_detector(name)
