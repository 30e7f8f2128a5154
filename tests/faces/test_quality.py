"""Face quality gate: each rejection reason on a constructed case, and real faces passing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from pipeline.faces.align import align_face
from pipeline.faces.detectors import create_detector
from pipeline.faces.landmarks import LandmarkPredictor, five_points
from pipeline.faces.quality import (
    REASONS,
    QualityConfig,
    is_corrupt,
    judge_face,
    landmark_parts_visible,
    sharpness,
)

ALL_PARTS = {"eyes": True, "brows": True, "nose": True, "mouth": True}


@dataclass
class Face:
    """One detected face with everything `judge_face` needs."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # [68, 2]
    crop: np.ndarray  # [112, 112, 3] uint8
    frame_size: tuple[int, int]

    def judge(self, **changes) -> str | None:
        fields = {"box": self.box, "landmarks68": self.landmarks, "crop": self.crop} | changes
        return judge_face(frame_size=self.frame_size, **fields)


@pytest.fixture(scope="module")
def predictor() -> LandmarkPredictor:
    return LandmarkPredictor()


@pytest.fixture(scope="module")
def detector():
    return create_detector("dlib_hog")


def detect_face(rgb: np.ndarray, detector, predictor: LandmarkPredictor) -> Face:
    box = detector(rgb)[0].box
    landmarks = predictor(rgb, box)
    crop, _ = align_face(rgb, five_points(landmarks))
    return Face(box, landmarks, crop, (rgb.shape[1], rgb.shape[0]))


@pytest.fixture(scope="module")
def astronaut(detector, predictor: LandmarkPredictor) -> Face:
    return detect_face(data.astronaut(), detector, predictor)  # a sharp, 88 px, near-frontal face


def blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(crop, (0, 0), sigma)


def test_good_real_face_passes_every_check(astronaut: Face) -> None:
    config = QualityConfig()
    x1, y1, x2, y2 = astronaut.box
    assert min(x2 - x1, y2 - y1) >= config.min_face_size
    assert landmark_parts_visible(astronaut.landmarks, astronaut.frame_size) == ALL_PARTS
    assert not is_corrupt(astronaut.crop)
    assert sharpness(astronaut.crop) > config.min_sharpness  # measured 430
    assert astronaut.judge() is None


def test_tiny_box_is_small(astronaut: Face) -> None:
    x1, y1, _, _ = astronaut.box
    assert astronaut.judge(box=(x1, y1, x1 + 30, y1 + 60)) == "small"
    assert astronaut.judge(box=(np.nan,) * 4) == "small"
    # "small" comes first: a tiny box with a constant crop is still "small".
    assert astronaut.judge(box=(x1, y1, x1 + 30, y1 + 30), crop=np.full_like(astronaut.crop, 128)) == "small"


def test_face_half_out_of_the_frame_lacks_landmarks(astronaut: Face) -> None:
    # The face's centre on the frame's left border: the image-left half of the points has x < 0.
    shifted = astronaut.landmarks - np.float32([astronaut.landmarks[:, 0].mean(), 0])
    visible = landmark_parts_visible(shifted, astronaut.frame_size)
    assert not all(visible.values())
    assert astronaut.judge(landmarks68=shifted) == "landmarks"


def test_each_part_is_judged_on_its_own(astronaut: Face) -> None:
    landmarks, frame_size = astronaut.landmarks, astronaut.frame_size
    # The top border just above the eyes: the brows, higher, fall outside.
    above = landmarks - np.float32([0, landmarks[36:48, 1].min() - 0.5])
    assert landmark_parts_visible(above, frame_size) == ALL_PARTS | {"brows": False}
    # The mouth below the bottom border of a frame cropped just under the nose.
    short_frame = (frame_size[0], int(landmarks[27:36, 1].max()) + 2)
    assert landmark_parts_visible(landmarks, short_frame) == ALL_PARTS | {"mouth": False}
    # Missing (NaN) points.
    missing = landmarks.copy()
    missing[40] = np.nan
    assert landmark_parts_visible(missing, frame_size) == ALL_PARTS | {"eyes": False}
    # One mouth point of 20 outside is "nearly all" inside.
    one_out = landmarks.copy()
    one_out[48, 0] = -5.0
    assert landmark_parts_visible(one_out, frame_size)["mouth"]
    assert astronaut.judge(landmarks68=one_out) is None


def test_constant_or_mostly_black_crop_is_corrupt(astronaut: Face) -> None:
    grey = np.full_like(astronaut.crop, 128)
    assert is_corrupt(grey)
    assert astronaut.judge(crop=grey) == "corrupt"
    mostly_outside = astronaut.crop.copy()
    mostly_outside[:, :70] = 0  # 62 % of the crop outside the frame
    assert is_corrupt(mostly_outside)
    assert astronaut.judge(crop=mostly_outside) == "corrupt"
    partly_outside = astronaut.crop.copy()
    partly_outside[:, :20] = 0  # 18 %: a face near the border, still usable
    assert not is_corrupt(partly_outside)
    assert astronaut.judge(crop=partly_outside) is None


def test_blurred_crop_is_blurred(astronaut: Face) -> None:
    for sigma in (2, 4, 8):
        assert astronaut.judge(crop=blur(astronaut.crop, sigma)) == "blurred", sigma
    assert astronaut.judge(crop=blur(astronaut.crop, 0.7)) is None


def test_black_border_does_not_make_a_blurred_face_sharp(astronaut: Face) -> None:
    """The sharp edge of the outside-the-frame area is left out of the sharpness."""
    blurred = blur(astronaut.crop, 4)
    blurred[:, :20] = 0
    assert sharpness(blurred) < 5  # measured 3.7 (with the edge counted: ~90)
    assert astronaut.judge(crop=blurred) == "blurred"


def test_reasons_are_the_public_contract() -> None:
    assert REASONS == ("small", "landmarks", "corrupt", "blurred")


def test_config_thresholds_apply(astronaut: Face) -> None:
    assert judge_face(*_args(astronaut), QualityConfig(min_face_size=200)) == "small"
    assert judge_face(*_args(astronaut), QualityConfig(min_sharpness=1000)) == "blurred"
    assert judge_face(*_args(astronaut), QualityConfig(min_std=100)) == "corrupt"


def _args(face: Face) -> tuple:
    return face.box, face.landmarks, face.crop, face.frame_size


def read_frames(path: Path, every: int) -> list[np.ndarray]:
    """Every `every`-th frame of a clip, RGB."""
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while capture.grab():
        if index % every == 0:
            frames.append(cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


@pytest.mark.parametrize("clip, every", [("single_face.mp4", 12), ("WolfgangLanger_Pexels.mp4", 24)])
def test_real_fixture_frames_pass_and_their_blur_does_not(
    fixture_videos: Path, detector, predictor: LandmarkPredictor, clip: str, every: int
) -> None:
    """All 544 frames of both clips pass (measured); a sample keeps the test fast."""
    frames = read_frames(fixture_videos / clip, every)
    assert len(frames) >= 6
    for i, rgb in enumerate(frames):
        face = detect_face(rgb, detector, predictor)
        assert face.judge() is None, f"frame {i * every}"
        assert face.judge(crop=blur(face.crop, 4)) == "blurred", f"frame {i * every}"
