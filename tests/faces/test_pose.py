"""Head pose from 68 landmarks: synthetic round trips, sign conventions, real dlib landmarks, NaN rows."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from skimage import data

from pipeline.faces.detectors import create_detector
from pipeline.faces.landmarks import LandmarkPredictor
from pipeline.faces.pose import (
    MODEL_INDICES,
    euler_angles,
    head_pose,
    head_poses,
    project_model,
    rotation_matrix,
)

FRAME = (640, 360)  # (width, height) of the fixture clips


def synthetic_landmarks(
    yaw: float, pitch: float, roll: float, noise: float = 0.0, seed: int = 0
) -> np.ndarray:
    """[68, 2] with the model points projected at the given pose (+ Gaussian pixel noise), NaN elsewhere."""
    landmarks = np.full((68, 2), np.nan)
    points = project_model(yaw, pitch, roll, FRAME)
    landmarks[MODEL_INDICES] = points + np.random.default_rng(seed).normal(0.0, noise, points.shape)
    return landmarks


@pytest.fixture(scope="module")
def predictor() -> LandmarkPredictor:
    return LandmarkPredictor()


def dlib_landmarks(rgb: np.ndarray, predictor: LandmarkPredictor) -> np.ndarray:
    """[68, 2] landmarks of the best dlib HOG face."""
    return predictor(rgb, create_detector("dlib_hog")(rgb)[0].box)


@pytest.fixture(scope="module")
def astronaut_landmarks(predictor: LandmarkPredictor) -> tuple[np.ndarray, tuple[int, int]]:
    rgb = data.astronaut()  # 512×512, one near-frontal face
    return dlib_landmarks(rgb, predictor), (rgb.shape[1], rgb.shape[0])


def test_rotation_matrix_and_euler_angles_round_trip() -> None:
    for angles in [(0, 0, 0), (35, -15, 20), (-60, 25, -45), (10, 170, -120)]:
        R = rotation_matrix(*angles)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(euler_angles(R), angles, atol=1e-9)


def test_recovers_known_poses_exactly() -> None:
    grid = itertools.product(range(-40, 41, 10), range(-20, 21, 10), range(-30, 31, 15))
    for yaw, pitch, roll in grid:
        estimate = head_pose(synthetic_landmarks(yaw, pitch, roll), FRAME)
        np.testing.assert_allclose(estimate, (yaw, pitch, roll), atol=1e-3, err_msg=f"{(yaw, pitch, roll)}")


def test_recovers_known_poses_from_noisy_points() -> None:
    """Half a pixel of noise on a ~110 px face (600 mm away): measured errors mean 0.4°, max 1.5°."""
    grid = itertools.product(range(-40, 41, 20), range(-20, 21, 20), range(-30, 31, 30))
    errors = []
    for seed, (yaw, pitch, roll) in enumerate(grid):
        estimate = head_pose(synthetic_landmarks(yaw, pitch, roll, noise=0.5, seed=seed), FRAME)
        errors.append(np.abs(np.subtract(estimate, (yaw, pitch, roll))))
    assert np.max(errors) < 2.0 and np.mean(errors) < 0.7


def test_sign_conventions_in_the_image() -> None:
    """Pin what positive angles look like, independently of the round trip."""

    def points(yaw: float, pitch: float, roll: float) -> dict[int, np.ndarray]:
        return dict(zip(MODEL_INDICES.tolist(), project_model(yaw, pitch, roll, FRAME), strict=True))

    def nose_minus_eyes(p: dict[int, np.ndarray]) -> np.ndarray:
        return p[30] - (p[36] + p[45]) / 2

    frontal = nose_minus_eyes(points(0, 0, 0))
    # yaw > 0: the face turns towards image right, so the nose tip moves right of the eyes' midpoint.
    assert nose_minus_eyes(points(20, 0, 0))[0] > frontal[0] + 5
    # pitch > 0 (looking up): the nose tip moves up towards the eyes (image y points down).
    assert nose_minus_eyes(points(0, 15, 0))[1] < frontal[1] - 5
    # roll > 0: clockwise in the image, so the image-right eye drops below the image-left eye.
    p = points(0, 0, 20)
    assert p[45][1] > p[36][1] + 10
    assert head_pose(synthetic_landmarks(20, 0, 0), FRAME)[0] == pytest.approx(20, abs=1e-3)


def test_astronaut_is_near_frontal(astronaut_landmarks) -> None:
    landmarks, frame_size = astronaut_landmarks
    yaw, pitch, roll = head_pose(landmarks, frame_size)
    # Measured: (4.8, -20.4, 3.9). Angles are in the camera frame (as OpenFace's): her face sits 130 px above
    # the centre of the 512 px image (focal 512 px), so looking at the camera alone is ~14° of pitch down.
    assert abs(yaw) < 15 and abs(pitch) < 25 and abs(roll) < 10


@pytest.mark.parametrize("angle", [-30, -15, 15, 30])
def test_in_image_rotation_changes_roll_only(astronaut_landmarks, angle: float) -> None:
    landmarks, frame_size = astronaut_landmarks
    base = np.array(head_pose(landmarks, frame_size))
    centre = landmarks.mean(axis=0)
    # cv2 angles are counter-clockwise on screen; a positive roll is clockwise.
    M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -angle, 1.0)
    change = np.array(head_pose(landmarks @ M[:, :2].T + M[:, 2], frame_size)) - base
    assert change[2] == pytest.approx(angle, abs=1.0)
    # Yaw and pitch (relative to her line of sight to the camera, ~6° down) turn with the image by `angle`:
    # measured up to 3.6° at 30°.
    assert np.abs(change[:2]).max() < 0.15 * abs(angle) + 0.5


def test_rotation_about_the_principal_point_is_a_camera_roll(astronaut_landmarks) -> None:
    """Rotating the image about its centre rolls the camera: R becomes Rz(angle) · R, exactly."""
    landmarks, frame_size = astronaut_landmarks
    R = rotation_matrix(*head_pose(landmarks, frame_size))
    M = cv2.getRotationMatrix2D((frame_size[0] / 2, frame_size[1] / 2), -20.0, 1.0)
    expected = euler_angles(rotation_matrix(0, 0, 20) @ R)
    np.testing.assert_allclose(head_pose(landmarks @ M[:, :2].T + M[:, 2], frame_size), expected, atol=0.05)


def test_mirrored_face_flips_yaw_and_roll(astronaut_landmarks, predictor: LandmarkPredictor) -> None:
    """dlib on the mirrored photo (measured: yaw 4.8 → -4.3, pitch -20.4 → -19.3, roll 3.9 → -4.4)."""
    landmarks, frame_size = astronaut_landmarks
    mirrored = np.ascontiguousarray(data.astronaut()[:, ::-1])
    yaw, pitch, roll = head_pose(landmarks, frame_size)
    yaw_m, pitch_m, roll_m = head_pose(dlib_landmarks(mirrored, predictor), frame_size)
    assert abs(yaw) > 2 and np.sign(yaw_m) == -np.sign(yaw)
    assert yaw_m == pytest.approx(-yaw, abs=1.5)
    assert roll_m == pytest.approx(-roll, abs=1.5)
    assert pitch_m == pytest.approx(pitch, abs=2.0)


def test_nan_landmarks_give_nan(astronaut_landmarks) -> None:
    landmarks, frame_size = astronaut_landmarks
    assert np.isnan(head_pose(np.full((68, 2), np.nan), frame_size)).all()
    missing_nose = landmarks.copy()
    missing_nose[30] = np.nan
    assert np.isnan(head_pose(missing_nose, frame_size)).all()
    # Points outside the model (the jaw contour) do not matter.
    missing_jaw = landmarks.copy()
    missing_jaw[0:8] = np.nan
    assert np.allclose(head_pose(missing_jaw, frame_size), head_pose(landmarks, frame_size))


def test_head_poses_keeps_nan_rows(astronaut_landmarks) -> None:
    landmarks, frame_size = astronaut_landmarks
    rows = np.stack([landmarks.reshape(-1), np.full(136, np.nan), landmarks.reshape(-1)]).astype(np.float32)
    poses = head_poses(rows, frame_size)
    assert poses.shape == (3, 3) and poses.dtype == np.float32
    assert np.isnan(poses[1]).all() and np.isfinite(poses[[0, 2]]).all()
    np.testing.assert_allclose(poses[0], head_pose(landmarks, frame_size), atol=1e-3)
    assert head_poses(np.zeros((0, 136)), frame_size).shape == (0, 3)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="68, 2"):
        head_pose(np.zeros((5, 2)), FRAME)
    with pytest.raises(ValueError, match="136"):
        head_poses(np.zeros((4, 68, 2)), FRAME)
