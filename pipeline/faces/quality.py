"""Reject faces that are unusable for affect analysis: too small, cut by the frame, corrupt, or blurred.

Seed 000 removed corrupt, non-face and low-resolution images and dropped faces whose landmarks lacked the
eyes, brows, nose or mouth. Non-faces are the detector's business; `judge_face` covers the rest for one
detected face, from its box, its 68 landmarks and its aligned crop (`pipeline.faces.align.align_face`).

Reasons, checked in this order (the first that applies is returned; each check assumes the earlier ones
passed, and the cheap geometric ones come before the pixel ones):
1. "small": the detector box's shorter side is below `min_face_size` frame pixels (or the box is not finite).
2. "landmarks": the eyes, brows, nose or mouth are missing: their points are not finite or fall outside the
   frame (a face cut by the frame border).
3. "corrupt": the crop is nearly constant (a black, grey or single-colour frame) or mostly outside the frame.
4. "blurred": the crop's sharpness (variance of the Laplacian) is below `min_sharpness`; blur is only
   meaningful on a crop that is not corrupt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.faces.align import DEFAULT_MARGIN, face_box

# iBUG 68-point indices (0-based) of the parts a usable face must show.
PARTS: dict[str, slice] = {
    "eyes": slice(36, 48),
    "brows": slice(17, 27),
    "nose": slice(27, 36),
    "mouth": slice(48, 68),
}
REASONS = ("small", "landmarks", "corrupt", "blurred")


@dataclass
class QualityConfig:
    """Thresholds of `judge_face` (they change which frames are kept, so they belong in params.yaml)."""

    min_face_size: float = 40.0  # shorter side of the detector box, frame pixels
    # `sharpness` of aligned 112 px crops, measured on every frame of the fixture clips (72 of
    # single_face.mp4, 472 of WolfgangLanger_Pexels.mp4, faces of 150-260 px): 224-308 and 260-777. The same
    # frames shrunk to faces of 37-53 px before detection: >= 100 (>= 80 also JPEG-compressed at quality 20).
    # The real crops blurred with a Gaussian of sigma 1 px: 46-108; 2 px: 11.3-18.6; 4 px: 2.9-3.7; 8 px:
    # 1.8-2.4 (blurring the frame instead, faces at the border included: 11.5-18.1 and 3.3-3.9). 25 keeps
    # every real face with a 3x margin and rejects sigma >= 2 too: that blur leaves about the detail of a
    # 20 px face, below min_face_size.
    min_sharpness: float = 25.0
    min_parts_inside: float = 0.9  # fraction of each part's points that must lie inside the frame
    # Below this grey-level standard deviation a crop is "nearly constant" (real crops above: >= 57).
    min_std: float = 4.0
    # Above this fraction of pure-black (outside the frame) pixels a crop is corrupt (real crops above:
    # <= 0.30, a face at the right border of WolfgangLanger_Pexels.mp4).
    max_outside: float = 0.5


def landmark_parts_visible(
    landmarks68: np.ndarray, frame_size: tuple[int, int], min_inside: float = 0.9
) -> dict[str, bool]:
    """Which face parts the landmarks show.

    A part counts as present when all its points are finite and at least `min_inside` of them lie inside the
    frame. dlib extrapolates the points of a face cut by the frame border, so those fall outside it.

    Args:
        landmarks68: [68, 2] (x, y) in frame pixels.
        frame_size: (width, height) of the frame in pixels.
        min_inside: fraction of a part's points that must be inside the frame (0.9: all 9 nose points,
            11 of 12 eye points, 9 of 10 brow points, 18 of 20 mouth points).

    Returns:
        {"eyes": bool, "brows": bool, "nose": bool, "mouth": bool}.
    """
    landmarks68 = np.asarray(landmarks68, dtype=np.float64)
    if landmarks68.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {landmarks68.shape}")
    width, height = frame_size
    x, y = landmarks68[:, 0], landmarks68[:, 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    finite = np.isfinite(landmarks68).all(axis=1)
    return {
        name: bool(finite[part].all() and inside[part].mean() >= min_inside) for name, part in PARTS.items()
    }


def _outside_mask(crop: np.ndarray) -> np.ndarray:
    """[S, S] bool: pure-black pixels, which `align_face` leaves where the crop extends past the frame."""
    return crop.max(axis=-1) == 0


def _check_crop(crop: np.ndarray) -> None:
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 crop [S, S, 3], got {crop.dtype} {crop.shape}")


def sharpness(crop: np.ndarray, margin: float = DEFAULT_MARGIN) -> float:
    """Variance of the Laplacian of the grey crop over the face square: high = sharp, low = blurred.

    Scale: OpenCV's 3×3 Laplacian (4-neighbour) of grey levels 0-255, so the value is in grey levels²;
    uint8 rounding alone gives ~2. It is computed on the aligned crop, so it does not depend on the face's
    size in the frame, but it does on the crop's: the thresholds in `QualityConfig` hold for 112 px crops.
    Only the face square (`pipeline.faces.align.face_box`, brows to mouth) counts, so a sharp or blurred
    background does not; pixels within 2 px of pure black are left out, because the edge between the face
    and the black outside-the-frame area is sharp however blurred the face is.

    Args:
        crop: aligned crop [S, S, 3] uint8 RGB.
        margin: the margin the crop was aligned with.

    Returns:
        The variance (0.0 when no pixel is left to measure).
    """
    _check_crop(crop)
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    laplacian = cv2.Laplacian(grey, cv2.CV_64F, ksize=1)
    # 5×5 dilation: the Laplacian of a pixel reaches 1 px, and the bilinear warp blends 1 px into the black.
    near_outside = cv2.dilate(_outside_mask(crop).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    x1, y1, x2, y2 = (int(round(v)) for v in face_box(crop.shape[0], margin))
    values = laplacian[y1:y2, x1:x2][~near_outside[y1:y2, x1:x2]]
    return float(values.var()) if values.size else 0.0


def is_corrupt(crop: np.ndarray, min_std: float = 4.0, max_outside: float = 0.5) -> bool:
    """Whether an aligned crop holds no usable image.

    Corrupt = nearly constant (grey-level standard deviation below `min_std`: a black, grey or single-colour
    decoding-error frame), or more than `max_outside` of its pixels pure black (RGB 0, 0, 0), which
    `align_face` leaves where the crop extends past the frame, or empty.

    Args:
        crop: aligned crop [S, S, 3] uint8 RGB.
    """
    _check_crop(crop)
    if crop.size == 0:
        return True
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return bool(grey.std() < min_std or _outside_mask(crop).mean() > max_outside)


def judge_face(
    box: tuple[float, float, float, float],
    landmarks68: np.ndarray,
    crop: np.ndarray,
    frame_size: tuple[int, int],
    config: QualityConfig | None = None,
    margin: float = DEFAULT_MARGIN,
    crop_sharpness: float | None = None,
) -> str | None:
    """Decide whether one detected face is usable.

    Args:
        box: detector box (x1, y1, x2, y2) in frame pixels.
        landmarks68: [68, 2] (x, y) in frame pixels.
        crop: the aligned crop [S, S, 3] uint8 RGB (`align_face`, 112 px for the default thresholds).
        frame_size: (width, height) of the frame in pixels.
        config: thresholds; None = `QualityConfig()`.
        margin: the margin the crop was aligned with.
        crop_sharpness: `sharpness(crop, margin)` when the caller has it already (it is not computed twice).

    Returns:
        None when the face is usable, else the first failing reason of "small", "landmarks", "corrupt",
        "blurred" (in that order: see the module docstring).
    """
    config = config or QualityConfig()
    x1, y1, x2, y2 = box
    side = min(x2 - x1, y2 - y1)
    if not math.isfinite(side) or side < config.min_face_size:
        return "small"
    if not all(landmark_parts_visible(landmarks68, frame_size, config.min_parts_inside).values()):
        return "landmarks"
    if is_corrupt(crop, config.min_std, config.max_outside):
        return "corrupt"
    if crop_sharpness is None:
        crop_sharpness = sharpness(crop, margin)
    if crop_sharpness < config.min_sharpness:
        return "blurred"
    return None
