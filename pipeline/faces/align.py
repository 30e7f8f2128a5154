"""Similarity alignment of faces to a canonical 5-point template, and the face views cut from aligned crops.

The template is InsightFace's ArcFace 112×112 template (eye centres, nose tip, mouth corners, image-left
first). That template crops tightly: the brows touch the top edge and the chin falls below the bottom. The
aligned crop therefore places the ArcFace square (the "face box") inside a larger canvas with `margin` of its
side added on every side, so the whole face, brows and chin included, is inside the crop.

Views are data: each entry of `VIEWS` turns an aligned crop [S, S, 3] into another [S, S, 3] image. Seed 000's
part views are fractions of the face box (rows × columns): eyes 0.35–0.55 × 0.2–0.8, mouth 0.7–0.9 × 0.2–0.8,
nose 0.2–0.8 × 0.4–0.6. In the ArcFace square the eye centres sit at row 0.46 and the mouth corners at 0.82,
inside those bands, which is why the fractions are taken of the face box and not of the margin crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

# ArcFace 112×112 template (InsightFace `arcface_dst`): image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

DEFAULT_SIZE = 112
# Border added around the ArcFace square, as a fraction of its side. Measured on the fixture clips and
# skimage's astronaut, the 68 dlib points span rows 0.30-1.12 and columns 0.04-0.95 of the ArcFace square
# (the chin falls below it), so 0.15 keeps brows and chin inside the crop for near-frontal faces.
DEFAULT_MARGIN = 0.15
# Faces shrunk by more than this factor are area-filtered before warping (see align_face).
ANTIALIAS_BELOW = 0.75


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns",
    without reflection.

    Args:
        src: [N, 2] points (N >= 2).
        dst: [N, 2] corresponding target points.

    Returns:
        M: [2, 3] float64 with dst ≈ src @ M[:, :2].T + M[:, 2].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two [N, 2] point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    # Force a proper rotation (det = +1): a mirrored face must not be "aligned" by a reflection.
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = (singular * d).sum() / src_var if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a [2, 3] affine matrix to points [N, 2]; returns [N, 2] float32."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (points @ np.asarray(M, dtype=np.float64)[:, :2].T + M[:, 2]).astype(np.float32)


def face_box(size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN) -> tuple[float, float, float, float]:
    """The ArcFace square inside an aligned crop: (x1, y1, x2, y2) in crop pixels."""
    side = size / (1 + 2 * margin)
    start = margin * side
    return (start, start, start + side, start + side)


def template(size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The 5 template points in an aligned crop of side `size` with `margin`: [5, 2] float32."""
    x1, y1, x2, _ = face_box(size, margin)
    return (ARCFACE_TEMPLATE_112 * ((x2 - x1) / 112.0) + np.float32([x1, y1])).astype(np.float32)


def align_face(
    rgb: np.ndarray, landmarks5: np.ndarray, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face so that its 5 points land on the template.

    Args:
        rgb: frame [H, W, 3] uint8.
        landmarks5: [5, 2] (x, y) in frame pixels, in `template` order (image-left eye first).
        size: side of the output crop in pixels.
        margin: border around the ArcFace square, as a fraction of its side.

    Returns:
        (crop, M): crop [size, size, 3] uint8 (pixels outside the frame are black), and M [2, 3] mapping frame
        pixel coordinates to crop pixel coordinates (`transform_points(points, M)`).
    """
    M = similarity_transform(landmarks5, template(size, margin))
    source, M_source = rgb, M
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    if scale < ANTIALIAS_BELOW:
        # warpAffine samples bilinearly with no low-pass filter, so shrinking a large face (a 300 px face into
        # a 112 px crop) aliases. Shrink the part of the frame the crop covers with an area filter first
        # (only that part: the whole frame cost ~1 ms at 640x360), then warp what remains.
        height, width = rgb.shape[:2]
        corners = transform_points(
            np.array([[0, 0], [size, 0], [0, size], [size, size]]), cv2.invertAffineTransform(M)
        )
        x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(axis=0))
        x1 = min(width, int(np.ceil(corners[:, 0].max())) + 2)
        y1 = min(height, int(np.ceil(corners[:, 1].max())) + 2)
        if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the frame
            return np.zeros((size, size, 3), np.uint8), M
        region = rgb[y0:y1, x0:x1]
        small_w = max(1, round(region.shape[1] * scale))
        small_h = max(1, round(region.shape[0] * scale))
        source = cv2.resize(region, (small_w, small_h), interpolation=cv2.INTER_AREA)
        sx, sy = small_w / region.shape[1], small_h / region.shape[0]
        # cv2.resize maps pixel centres: x_small = (x - x0 + 0.5) * sx - 0.5.
        linear = M[:, :2] @ np.diag([1 / sx, 1 / sy])
        shift = np.array([0.5 / sx - 0.5 + x0, 0.5 / sy - 0.5 + y0])
        M_source = np.hstack([linear, (M[:, :2] @ shift + M[:, 2])[:, None]])
    crop = cv2.warpAffine(
        source, M_source, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return crop, M


def _box_pixels(
    rows: tuple[float, float], cols: tuple[float, float], size: int, margin: float
) -> tuple[int, int, int, int]:
    """Fractions of the face box → integer pixel bounds (r0, r1, c0, c1) in a crop of side `size`."""
    x1, y1, x2, _ = face_box(size, margin)
    side = x2 - x1
    r0, r1 = (int(round(y1 + f * side)) for f in rows)
    c0, c1 = (int(round(x1 + f * side)) for f in cols)
    return r0, r1, c0, c1


def cut_bands(
    face: np.ndarray,
    bands: Sequence[tuple[tuple[float, float], tuple[float, float]]],
    margin: float = DEFAULT_MARGIN,
) -> np.ndarray:
    """Cut rectangular bands out of an aligned crop, stack them vertically and resize to the crop's size.

    Args:
        face: aligned crop [S, S, 3] uint8.
        bands: ((row_from, row_to), (col_from, col_to)) fractions of the face box, stacked top to bottom.
        margin: the margin the crop was aligned with.

    Returns:
        [S, S, 3] uint8.
    """
    size = face.shape[0]
    parts = []
    for rows, cols in bands:
        r0, r1, c0, c1 = _box_pixels(rows, cols, size, margin)
        parts.append(face[r0:r1, c0:c1])
    width = max(part.shape[1] for part in parts)
    # Bands of different widths are resized to a common width before stacking.
    parts = [
        p if p.shape[1] == width else cv2.resize(p, (width, p.shape[0]), interpolation=cv2.INTER_LINEAR)
        for p in parts
    ]
    stacked = np.concatenate(parts, axis=0)
    return cv2.resize(stacked, (size, size), interpolation=cv2.INTER_LINEAR)


# Seed 000's regions: (rows, cols) as fractions of the aligned face box.
EYES = ((0.35, 0.55), (0.2, 0.8))
MOUTH = ((0.7, 0.9), (0.2, 0.8))
NOSE = ((0.2, 0.8), (0.4, 0.6))

View = Callable[[np.ndarray, float], np.ndarray]

VIEWS: dict[str, View] = {
    "face": lambda face, margin: face,
    "eye_mouth": lambda face, margin: cut_bands(face, [EYES, MOUTH], margin),  # seed 000's auxiliary view
    "eyes": lambda face, margin: cut_bands(face, [EYES], margin),
    "mouth": lambda face, margin: cut_bands(face, [MOUTH], margin),
    "nose": lambda face, margin: cut_bands(face, [NOSE], margin),
}


def make_views(
    face_crop: np.ndarray, names: Sequence[str], margin: float = DEFAULT_MARGIN
) -> dict[str, np.ndarray]:
    """Build the requested views of one aligned crop.

    Args:
        face_crop: [S, S, 3] uint8 from `align_face`.
        names: keys of `VIEWS`.
        margin: the margin `face_crop` was aligned with (views are fractions of the face box inside it).

    Returns:
        {name: [S, S, 3] uint8}.
    """
    unknown = [name for name in names if name not in VIEWS]
    if unknown:
        raise KeyError(f"unknown view(s) {unknown} (registered: {', '.join(VIEWS)})")
    return {name: np.ascontiguousarray(VIEWS[name](face_crop, margin)) for name in names}
