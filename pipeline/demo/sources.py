"""Real face material shipped with installed packages, plus dlib landmark helpers.

No downloads: the portraits are `skimage.data.astronaut()` (Eileen Collins, NASA) and matplotlib's
`grace_hopper.jpg` sample; `skimage.data.lfw_subset()` gives 100 real 25x25 LFW faces whose face shape
(dlib landmarks) and low-frequency shading seed the identity variations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from pipeline.faces.landmarks import default_model_path

# dlib 68-point index groups (image-left first).
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
EYE_R = np.arange(36, 42)  # subject's right eye = image left
EYE_L = np.arange(42, 48)
MOUTH_OUTER = np.arange(48, 60)
MOUTH_INNER = np.arange(60, 68)

# Index permutation that maps landmarks of a mirrored face back onto dlib's semantic order.
MIRROR_PERM = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


@dataclass(frozen=True)
class Portrait:
    """A real portrait photo with its face geometry and a person cut-out.

    Attributes:
        name: short source name.
        image: [H, W, 3] uint8 RGB.
        landmarks: [68, 2] float32 dlib landmarks (x, y).
        alpha: [H, W] float32 person mask in [0, 1] (GrabCut, feathered).
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class DonorFace:
    """A real LFW face used for face shape and low-frequency shading.

    Attributes:
        image: [S, S] float32 grey in [0, 1], upsampled from the 25x25 original.
        landmarks: [68, 2] float32 dlib landmarks in the upsampled image.
    """

    image: np.ndarray
    landmarks: np.ndarray


@functools.cache
def face_detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def shape_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(default_model_path()))


def detect_landmarks(
    rgb: np.ndarray, upsample: int = 0, near: tuple[float, float] | None = None
) -> tuple[np.ndarray, dlib.rectangle] | None:
    """dlib HOG face + 68 landmarks.

    Args:
        rgb: [H, W, 3] uint8 image.
        upsample: detector pyramid upsampling.
        near: (x, y) to pick the detection closest to; default the largest.

    Returns:
        ([68, 2] float32 landmarks, dlib rectangle), or None when no face is found.
    """
    rects = list(face_detector()(rgb, upsample))
    if not rects:
        return None
    if near is None:
        rect = max(rects, key=lambda r: r.width() * r.height())
    else:
        rect = min(rects, key=lambda r: (r.center().x - near[0]) ** 2 + (r.center().y - near[1]) ** 2)
    shape = shape_predictor()(rgb, rect)
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32)
    return pts, rect


def symmetrize(landmarks: np.ndarray) -> np.ndarray:
    """[68, 2] average of a landmark set and its own mirror image (aligned by a similarity).

    LFW faces are not all frontal; averaging with the mirror removes most of the head turn and keeps
    the face's proportions.
    """
    mirrored = landmarks[MIRROR_PERM] * np.array([-1.0, 1.0], np.float32)
    m, _ = cv2.estimateAffinePartial2D(mirrored, landmarks)
    aligned = mirrored @ m[:, :2].T + m[:, 2]
    return ((landmarks + aligned) / 2).astype(np.float32)


def close_mouth_shape(landmarks: np.ndarray) -> np.ndarray:
    """[68, 2] landmarks with an open mouth closed: lower lip and chin raised by the gap between the
    inner lips (many LFW faces smile or talk; a donor's shape must not stretch a closed mouth open)."""
    lm = landmarks.copy()
    gap = float(np.mean(lm[[65, 66, 67], 1] - lm[[63, 62, 61], 1]))
    if gap <= 0:
        return lm
    lm[55:60, 1] -= gap
    lm[65:68] = lm[[63, 62, 61]]
    chin_weight = np.clip(1.0 - np.abs(np.arange(17) - 8) / 4.0, 0, 1)  # jaw follows, most at the chin
    lm[:17, 1] -= gap * chin_weight
    return lm


def eye_centers(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye centre, image-right eye centre), each [2]."""
    return landmarks[EYE_R].mean(0), landmarks[EYE_L].mean(0)


def person_mask(
    rgb: np.ndarray, landmarks: np.ndarray, side_clear: float | None = None, work_iod: float = 32.0
) -> np.ndarray:
    """[H, W] float32 feathered person cut-out (head and shoulders) by GrabCut seeded from the face.

    GrabCut runs on a head-and-shoulders crop scaled to `work_iod` px between the eyes (speed); the
    mask is zero outside that crop.
    """
    el, er = eye_centers(landmarks)
    iod = float(np.linalg.norm(er - el))
    cx, cy = (el + er) / 2
    x0, x1 = int(max(0, cx - 3.5 * iod)), int(min(rgb.shape[1], cx + 3.5 * iod))
    y0, y1 = int(max(0, cy - 3.0 * iod)), int(min(rgb.shape[0], cy + 6.0 * iod))
    scale = min(1.0, work_iod / iod)
    crop = cv2.resize(rgb[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = _grabcut_mask(crop, (landmarks - [x0, y0]) * scale, side_clear)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    alpha[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return alpha


def _grabcut_mask(rgb: np.ndarray, landmarks: np.ndarray, side_clear: float | None) -> np.ndarray:
    """[H, W] float32 feathered GrabCut foreground of a head-and-shoulders crop."""
    h, w = rgb.shape[:2]
    el, er = eye_centers(landmarks)
    iod = float(np.linalg.norm(er - el))
    cx = float((el[0] + er[0]) / 2)
    chin_y = float(landmarks[8, 1])
    brow_y = float(landmarks[BROWS, 1].min())
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    head = ((xx - cx) / (1.45 * iod)) ** 2 + ((yy - (brow_y + chin_y) / 2 + 0.3 * iod) / (1.9 * iod)) ** 2 < 1
    torso = (yy > chin_y + 0.6 * iod) & (np.abs(xx - cx) < 1.6 * iod + (yy - chin_y) * 1.0)
    mask[head | torso] = cv2.GC_PR_FGD
    # Sure foreground: the face itself, the neck and the chest below it (the seeds GrabCut cannot flip).
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, cv2.GC_FGD)
    jaw_w = float(landmarks[12, 0] - landmarks[4, 0])
    neck = (np.abs(xx - cx) < 0.35 * jaw_w) & (yy > chin_y) & (yy < chin_y + 1.2 * iod)
    chest = (yy > chin_y + 1.5 * iod) & (np.abs(xx - cx) < 1.3 * iod)
    mask[neck | chest] = cv2.GC_FGD
    # Sure background: beside and above the head, down to the shoulder line.
    far = ((xx - cx) / (2.4 * iod)) ** 2 + ((yy - brow_y) / (2.6 * iod)) ** 2 > 1
    mask[far & (yy < chin_y)] = cv2.GC_BGD
    if side_clear is not None:
        # Photo-specific: clear the band beside the lower face (a flag pole next to Grace Hopper).
        mask[
            (np.abs(xx - cx) > side_clear * iod) & (yy > chin_y - 2.0 * iod) & (yy < chin_y + 0.15 * iod)
        ] = cv2.GC_BGD

    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation draws from OpenCV's global RNG
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(rgb, mask, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)

    # Keep the component holding the face and fill its holes (shadows, logos, the dark collar).
    _, labels = cv2.connectedComponents(fg)
    fg = (labels == labels[int(landmarks[30, 1]), int(landmarks[30, 0])]).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    inv = (1 - fg).copy()
    flood = np.zeros((h + 2, w + 2), np.uint8)
    cv2.floodFill(inv, flood, (0, 0), 2)
    fg[inv == 1] = 1
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), max(1.0, iod / 30))
    return alpha


def _read_grace_hopper() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@functools.cache
def load_portraits() -> tuple[Portrait, ...]:
    """The two real portraits, with landmarks and cut-out masks (cached: GrabCut takes ~1 s each)."""
    from skimage import data

    sources = [
        # (name, image, rough face centre to pick the right detection (the astronaut's mission patch is
        # also detected as a face), GrabCut side band to clear in IOD units)
        ("astronaut", data.astronaut(), (220.0, 120.0), None),
        ("hopper", _read_grace_hopper(), (270.0, 230.0), 1.33),
    ]
    portraits = []
    for name, rgb, near, side_clear in sources:
        rgb = np.ascontiguousarray(rgb[..., :3])
        found = detect_landmarks(rgb, upsample=0, near=near)
        if found is None:
            raise RuntimeError(f"dlib finds no face in the {name} portrait")
        landmarks, _ = found
        portraits.append(Portrait(name, rgb, landmarks, person_mask(rgb, landmarks, side_clear)))
    return tuple(portraits)


@functools.cache
def load_donor_faces(size: int = 200) -> tuple[DonorFace, ...]:
    """LFW faces (skimage's lfw_subset, first 100 = faces) on which dlib finds landmarks after upsampling."""
    from skimage import data

    faces = data.lfw_subset()[:100]
    donors = []
    for face in faces:
        grey = cv2.resize(face.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        rgb = cv2.cvtColor(np.clip(grey * 255, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        found = detect_landmarks(rgb, upsample=0)
        if found is not None:
            donors.append(DonorFace(np.clip(grey, 0, 1), close_mouth_shape(symmetrize(found[0]))))
    return tuple(donors)
