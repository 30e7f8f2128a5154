"""Detectability check for a new identity: the demo is useless if dlib's HOG detector misses its faces."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.demo.dynamics import AU, PROTOTYPES
from pipeline.demo.expressions import Rig, render_expression
from pipeline.demo.identities import Identity, sprite_geometry
from pipeline.demo.scene import pose_matrix
from pipeline.demo.sources import face_detector


def prototype_intensity(expression: str, level: float = 1.0) -> np.ndarray:
    """[12] AU intensities of an expression prototype (core AUs only) at `level`."""
    intensity = np.zeros(len(AU), np.float32)
    for name in PROTOTYPES[expression][0]:
        intensity[AU[name]] = level
    return intensity


def hard_views(
    identity: Identity, rig: Rig, face_box: float, rolls=(-9.0, 9.0), gain: float = 0.72, size=(320, 256)
) -> list[np.ndarray]:
    """[H, W, 3] uint8 frames of the identity on mid grey: neutral upright, then every expression
    prototype at full intensity, rolled by each of `rolls` and dimmed by `gain` (the hard cases)."""
    width, height = size
    sw, _, _, eye_y = sprite_geometry(face_box)
    views = []
    cases = [(np.zeros(len(AU), np.float32), 0.0, 1.0)]
    cases += [(prototype_intensity(e), r, gain) for e in PROTOTYPES for r in rolls]
    for intensity, roll, g in cases:
        sprite = render_expression(identity, rig, intensity).astype(np.float32)
        rgba = np.dstack([sprite, identity.alpha * 255])
        m = pose_matrix((sw / 2, eye_y), (width / 2, 0.4 * height), np.array([0, 0, roll, 1.0]), 1.0)
        warped = cv2.warpAffine(
            rgba, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = warped[..., 3:] / 255
        frame = (warped[..., :3] * alpha + 128 * (1 - alpha)) * g
        views.append(np.clip(frame, 0, 255).astype(np.uint8))
    return views


def detection_rate(identity: Identity, rig: Rig, face_box: float) -> float:
    """Share of `hard_views` in which dlib's HOG detector (no upsampling) finds a face."""
    views = hard_views(identity, rig, face_box)
    return float(np.mean([len(face_detector()(v, 0)) > 0 for v in views]))
