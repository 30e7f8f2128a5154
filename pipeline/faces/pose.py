"""Head pose (yaw, pitch, roll) from dlib's 68 landmarks: `cv2.solvePnP` of a rigid mean-face model.

Camera: a pinhole with square pixels, focal length = frame width in pixels (a horizontal field of view of
about 53°, typical of webcams and phone videos) and principal point = frame centre, no lens distortion. The
true intrinsics of the clips are unknown. The angles are in the camera frame (as OpenFace's), so for a face
away from the image centre they include the direction of the face from the optical axis, which depends on
the assumed focal length: a face looking straight at the camera 130 px above the centre of a 512 px frame
has a pitch of about -14°. Near the centre a wrong focal length mostly changes the estimated distance.

Model: 12 points that move little with expression and do not slide over the face with pose (the jaw contour
0-16 does: it is the silhouette, not fixed points on the skin). Millimetres, in a face frame that coincides
with OpenCV's camera frame for a frontal face: x towards image right (the subject's left), y down, z away
from the camera; origin midway between the outer eye corners. Widths and heights are rounded adult means,
sexes pooled, from Farkas' anthropometric tables (Farkas 1994, "Anthropometry of the Head and Face"):
biocular width ex-ex 90, intercanthal width en-en 32, nose width ~30 at the nostrils, mouth width ch-ch 52,
nasion-subnasale 52 and nasion-gnathion 118 mm (iBUG point 27 sits about at the canthal line, ~8 mm below
the true nasion). Depths follow the usual soft-tissue profile (eye inner corners ~12 mm in front of the
outer ones, nose tip ~42 mm, subnasale ~26 mm, mouth corners ~12 mm, chin ~16 mm) and are the least certain
values (±5 mm); they set the scale of yaw and pitch: a model nose 10 % too long gives angles roughly 10 %
too small.

Angles, in degrees, with R the rotation from the face frame to the camera frame:

    R = Rx(-pitch) · Ry(-yaw) · Rz(roll)      (Rx, Ry, Rz: right-handed rotations about the camera axes)

- yaw > 0: the subject turns to their own left, the face points towards image right;
- pitch > 0: the subject looks up;
- roll > 0: the face is rotated clockwise in the image (the head tilts towards the subject's left shoulder).

This is OpenFace's composition (R = Rx·Ry·Rz, camera axes x right, y down, z forward), so the conventions
map one to one onto its `pose_Rx`, `pose_Ry`, `pose_Rz` (radians): yaw = -deg(pose_Ry),
pitch = -deg(pose_Rx), roll = deg(pose_Rz) (the values differ by the models and fits, not by convention).
A frontal face at the image centre gives (0, 0, 0).
"""

from __future__ import annotations

import cv2
import numpy as np

# iBUG 68-point indices (0-based) of the model points, and their 3-D positions (mm, see module docstring).
MODEL_INDICES = np.array([36, 39, 42, 45, 27, 30, 31, 33, 35, 48, 54, 8])
MODEL_POINTS = np.array(
    [
        [-45.0, 0.0, 0.0],  # 36 image-left eye, outer corner (the subject's right exocanthion)
        [-16.0, 0.0, -12.0],  # 39 image-left eye, inner corner (endocanthion)
        [16.0, 0.0, -12.0],  # 42 image-right eye, inner corner
        [45.0, 0.0, 0.0],  # 45 image-right eye, outer corner
        [0.0, 0.0, -20.0],  # 27 top of the nose bridge, between the eyes
        [0.0, 35.0, -42.0],  # 30 nose tip (pronasale)
        [-15.0, 42.0, -20.0],  # 31 image-left nostril, outer edge
        [0.0, 44.0, -26.0],  # 33 nose base (subnasale)
        [15.0, 42.0, -20.0],  # 35 image-right nostril, outer edge
        [-26.0, 66.0, -12.0],  # 48 image-left mouth corner (cheilion)
        [26.0, 66.0, -12.0],  # 54 image-right mouth corner
        [0.0, 110.0, -16.0],  # 8 chin (gnathion)
    ],
    dtype=np.float64,
)
NUM_LANDMARKS = 68


def camera_matrix(frame_size: tuple[int, int]) -> np.ndarray:
    """Pinhole intrinsics assumed for a frame of (width, height) pixels: focal = width, centre = frame centre.

    Returns:
        K: [3, 3] float64.
    """
    width, height = frame_size
    return np.array([[width, 0.0, width / 2], [0.0, width, height / 2], [0.0, 0.0, 1.0]], dtype=np.float64)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation from the face frame to the camera frame for angles in degrees (module docstring convention).

    Returns:
        R: [3, 3] float64.
    """
    ax, ay, az = np.radians([-pitch, -yaw, roll])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def euler_angles(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `rotation_matrix`: (yaw, pitch, roll) in degrees from R [3, 3].

    With R = Rx(a)·Ry(b)·Rz(c): R[0, 2] = sin b, R[0, :2] = cos b·(cos c, -sin c), R[1:, 2] = cos b·(-sin a,
    cos a). Yaw is in [-90, 90]; pitch and roll in (-180, 180].
    """
    ay = np.arcsin(np.clip(R[0, 2], -1.0, 1.0))
    ax = np.arctan2(-R[1, 2], R[2, 2])
    az = np.arctan2(-R[0, 1], R[0, 0])
    return float(-np.degrees(ay)), float(-np.degrees(ax)), float(np.degrees(az))


def project_model(
    yaw: float, pitch: float, roll: float, frame_size: tuple[int, int], distance: float = 600.0
) -> np.ndarray:
    """Image points [12, 2] float64 of `MODEL_POINTS` posed at (yaw, pitch, roll) degrees, `distance` mm in
    front of the camera of `camera_matrix(frame_size)` (model origin on the optical axis).

    For tests and for checking a model or camera assumption; order as `MODEL_INDICES`.
    """
    R = rotation_matrix(yaw, pitch, roll)
    camera_points = MODEL_POINTS @ R.T + np.array([0.0, 0.0, distance])
    homogeneous = camera_points @ camera_matrix(frame_size).T
    return homogeneous[:, :2] / homogeneous[:, 2:]


def head_pose(landmarks68: np.ndarray, frame_size: tuple[int, int]) -> tuple[float, float, float]:
    """Head pose of one face.

    Args:
        landmarks68: [68, 2] (x, y) in frame pixels (dlib iBUG order).
        frame_size: (width, height) of the frame in pixels.

    Returns:
        (yaw, pitch, roll) in degrees (conventions in the module docstring); NaN × 3 when a model point is not
        finite or the fit fails.
    """
    landmarks68 = np.asarray(landmarks68, dtype=np.float64)
    if landmarks68.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {landmarks68.shape}")
    image_points = landmarks68[MODEL_INDICES]
    if not np.isfinite(image_points).all():
        return (np.nan, np.nan, np.nan)
    K = camera_matrix(frame_size)
    try:
        # SQPnP finds the global minimum without an initial guess (no flipped or diverged fits far from
        # frontal); LM then refines that to the least-squares reprojection error in pixels.
        ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS, image_points, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            return (np.nan, np.nan, np.nan)
        rvec, tvec = cv2.solvePnPRefineLM(MODEL_POINTS, image_points, K, None, rvec, tvec)
    except cv2.error:  # degenerate points (e.g. all equal)
        return (np.nan, np.nan, np.nan)
    R, _ = cv2.Rodrigues(rvec)
    return euler_angles(R)


def head_poses(landmarks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Head poses of a track, one face per row.

    Args:
        landmarks: [N, 136] (x0, y0, x1, y1, ... of the 68 points, frame pixels) as in the face table; rows
            of NaN (frames without a face) are allowed.
        frame_size: (width, height) of the frames in pixels.

    Returns:
        [N, 3] float32 (yaw, pitch, roll) in degrees; NaN rows where the landmarks are missing.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 2 or landmarks.shape[1] != 2 * NUM_LANDMARKS:
        raise ValueError(f"expected [N, {2 * NUM_LANDMARKS}] landmarks, got {landmarks.shape}")
    poses = np.full((len(landmarks), 3), np.nan, dtype=np.float32)
    # One solvePnP per face (~0.15 ms); OpenCV has no batched PnP.
    for i, row in enumerate(landmarks):
        if np.isfinite(row).any():
            poses[i] = head_pose(row.reshape(NUM_LANDMARKS, 2), frame_size)
    return poses
