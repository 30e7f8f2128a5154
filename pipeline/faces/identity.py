"""Face identity descriptors: dlib's ResNet face-recognition model, to tell whether two face tracks are
one person.

The model (`dlib_face_recognition_resnet_model_v1.dat`, shipped by `face-recognition-models`, so offline)
maps a face, aligned by dlib from its 68 landmarks, to a 128-d vector; two faces of one person lie closer
than `SAME_PERSON_DISTANCE` (dlib's documented threshold, 99.38% on LFW). About 15-90 ms per face on CPU, so
the faces stage describes only a few faces per person track (`pipeline.faces.process`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dlib
import numpy as np

# Euclidean distance between two descriptors below which dlib calls two faces one person.
SAME_PERSON_DISTANCE = 0.6


def default_model_path() -> Path:
    """Path of dlib's face-recognition ResNet shipped by face-recognition-models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # face_recognition_models imports pkg_resources
        import face_recognition_models

    return Path(face_recognition_models.face_recognition_model_location())


class FaceDescriber:
    """dlib ResNet face descriptor of one face given its box and 68 landmarks."""

    def __init__(self, model_path: Path | str | None = None) -> None:
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"dlib face-recognition model not found: {self.model_path}")
        self._model = dlib.face_recognition_model_v1(str(self.model_path))

    def __call__(
        self, rgb: np.ndarray, box: tuple[float, float, float, float], landmarks68: np.ndarray
    ) -> np.ndarray:
        """Describe one face.

        Args:
            rgb: the frame, RGB uint8 [H, W, 3].
            box: (x1, y1, x2, y2) face box in frame pixels (x2, y2 exclusive).
            landmarks68: [68, 2] dlib points in frame pixels.

        Returns:
            [128] float32 descriptor.
        """
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        rect = dlib.rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1))
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks68).reshape(68, 2)]
        shape = dlib.full_object_detection(rect, points)
        return np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(rgb), shape), np.float32)
