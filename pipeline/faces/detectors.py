"""Face detectors behind one registry and one call signature.

Every detector is built with `create_detector(name, **kwargs)` and called as `detector(rgb)` on an RGB uint8
frame [H, W, 3]; it returns a list of `Detection` in frame pixels, best first. Adding a detector means one
class decorated with `@register_detector("name")`.

- `dlib_hog` (default, offline): dlib HOG + linear SVM; frontal and near-frontal faces of at least ~80 px
  (~40 px with `upsample=1`).
- `opencv_haar` (offline): OpenCV's frontal-face Haar cascade; more false positives than dlib.
- `retinaface` (offline): the MobileNetV2 RetinaFace graph shipped in the `retinaface` 1.1.1 wheel, run by
  PyTorch without TensorFlow (`pipeline.faces.retinaface`); 5 landmarks per face.
- `dlib_mmod` (offline): dlib's CNN max-margin object detector (MMOD), weights from the
  `face-recognition-models` wheel; boxes only; 8-10 µs per pixel on CPU, so use `max_side` (0.4 s per
  frame at `max_side=320`); faces of at least ~80 px (~40 px with `upsample=1`).
- `blazeface` (offline): MediaPipe's BlazeFace (`mediapipe` 0.10.21, TFLite models in the wheel); 2-9 ms per
  frame; 6 keypoints without mouth corners, so no `landmarks5` (alignment uses dlib's 68 points).
- `mtcnn` (offline): MTCNN (P-Net, R-Net, O-Net) from `facenet-pytorch` 2.6.0, weights in the wheel, on the
  CPU (60-300 ms per frame); 5 landmarks per face.
- `retinaface_serengil` (not offline): serengil's `retina-face` + TensorFlow + a local weights file, for
  users who bring them; none of them can be installed or downloaded on this project's machines.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

Detector = Callable[[np.ndarray], list["Detection"]]

DEFAULT_DETECTOR = "dlib_hog"


@dataclass
class Detection:
    """One detected face.

    Attributes:
        box: (x1, y1, x2, y2) in frame pixels (x2, y2 exclusive); may extend past the frame border.
        score: detector confidence; the scale differs between detectors (dlib: SVM margin, mostly 0-3;
            Haar: cascade level weight; RetinaFace, BlazeFace, MTCNN: probability; dlib MMOD: CNN margin,
            about 1 for clear faces).
        landmarks5: [5, 2] float32 (x, y) or None: image-left eye, image-right eye, nose tip, image-left
            mouth corner, image-right mouth corner (only detectors that predict them fill this).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks5: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


DETECTORS: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Decorator adding a detector factory (a class or function taking keyword args) to `DETECTORS`."""

    def decorator(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        if name in DETECTORS:
            raise ValueError(f"detector '{name}' is already registered")
        DETECTORS[name] = factory
        return factory

    return decorator


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs: Any) -> Detector:
    """Build a registered detector.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
    """
    if name not in DETECTORS:
        raise KeyError(f"unknown face detector '{name}' (registered: {', '.join(sorted(DETECTORS))})")
    return DETECTORS[name](**kwargs)


def _downscale(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Shrink a frame so that its longer side is at most `max_side`; returns (image, scale applied)."""
    height, width = rgb.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return rgb, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _check_frame(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {rgb.dtype} {rgb.shape}")


def _check_max_side(max_side: int | None) -> int | None:
    """`max_side` as given to a detector: None or a positive whole number of pixels."""
    if max_side is None:
        return None
    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer) or max_side < 1:
        raise ValueError(f"max_side must be None or a positive integer (pixels), got {max_side!r}")
    return int(max_side)


def _import_optional(module: str, detector: str, install: str) -> Any:
    """Import a package that only one detector needs; the error names the package and its install."""
    try:
        with warnings.catch_warnings():
            # face_recognition_models imports pkg_resources, which warns about its own deprecation.
            warnings.simplefilter("ignore", UserWarning)
            return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the '{detector}' detector needs the `{module}` package, which is not importable ({error}); "
            f"install it with `{install}` (`make setup` does)"
        ) from error


@register_detector("dlib_hog")
class DlibHogDetector:
    """dlib's HOG + linear-SVM frontal face detector (`dlib.get_frontal_face_detector`).

    The detector's smallest face is about 80×80 px at `upsample=0`; each upsampling step halves that and
    roughly quadruples the time. Scores are SVM margins (`detector.run`), > 0 at the default threshold.
    """

    def __init__(
        self,
        upsample: int = 0,
        adjust_threshold: float = 0.0,
        min_score: float = 0.0,
        min_size: float = 0.0,
        max_side: int | None = None,
    ) -> None:
        """
        Args:
            upsample: times dlib upsamples the image before detecting (finds smaller faces, slower).
            adjust_threshold: added to dlib's SVM threshold; negative finds more (weaker) faces.
            min_score: drop detections scoring below this.
            min_size: drop boxes whose shorter side is below this many frame pixels.
            max_side: downscale frames whose longer side exceeds this before detecting (boxes are mapped
                back to frame pixels); None = detect at full resolution. Trades small faces for speed.
        """
        import dlib

        self.upsample = int(upsample)
        self.adjust_threshold = float(adjust_threshold)
        self.min_score = float(min_score)
        self.min_size = float(min_size)
        self.max_side = max_side
        self._detector = dlib.get_frontal_face_detector()

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        _check_frame(rgb)
        image, scale = _downscale(rgb, self.max_side)
        rects, scores, _ = self._detector.run(
            np.ascontiguousarray(image), self.upsample, self.adjust_threshold
        )
        detections = []
        for rect, score in zip(rects, scores, strict=True):
            # dlib rectangles are inclusive on the right/bottom edge.
            box = (
                rect.left() / scale,
                rect.top() / scale,
                (rect.right() + 1) / scale,
                (rect.bottom() + 1) / scale,
            )
            detection = Detection(box=box, score=float(score))
            if detection.score >= self.min_score and min(detection.width, detection.height) >= self.min_size:
                detections.append(detection)
        return sorted(detections, key=lambda d: -d.score)


@register_detector("opencv_haar")
class OpenCVHaarDetector:
    """OpenCV's Viola-Jones frontal-face Haar cascade (`haarcascade_frontalface_default.xml`).

    Scores are the cascade's last-stage level weights (`detectMultiScale3(outputRejectLevels=True)`), on a
    different scale from dlib's.
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_score: float = -np.inf,
        min_size: float = 40.0,
        max_side: int | None = None,
    ) -> None:
        """
        Args:
            cascade: file name under `cv2.data.haarcascades`, or a path to a cascade XML.
            scale_factor: image pyramid step.
            min_neighbors: overlapping raw hits needed to keep a detection (higher = fewer false positives).
            min_score: drop detections whose level weight is below this.
            min_size: smallest face side in frame pixels.
            max_side: downscale frames whose longer side exceeds this before detecting; None = full size.
        """
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FileNotFoundError(f"cannot load Haar cascade: {path}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_score = float(min_score)
        self.min_size = float(min_size)
        self.max_side = max_side

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        _check_frame(rgb)
        image, scale = _downscale(rgb, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        side = max(1, int(round(self.min_size * scale)))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
            outputRejectLevels=True,
        )
        detections = []
        for (x, y, w, h), weight in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights), strict=True):
            box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            if float(weight) >= self.min_score:
                detections.append(Detection(box=tuple(float(v) for v in box), score=float(weight)))
        return sorted(detections, key=lambda d: -d.score)


@register_detector("retinaface")
class RetinaFaceDetector:
    """RetinaFace (MobileNetV2 backbone, FPN, SSH; anchors decoded and NMS inside the graph) from the frozen
    graph of the `retinaface` 1.1.1 wheel, executed op by op with torch (`pipeline.faces.retinaface`).

    Scores are probabilities; the graph keeps faces scoring above 0.5 after NMS at IoU 0.4, and `min_score`
    filters further. The 5 landmarks are returned in this module's order (image-left eye first).
    """

    def __init__(
        self, graph: str | os.PathLike[str] | None = None, min_score: float = 0.9, max_side: int | None = None
    ) -> None:
        """
        Args:
            graph: the frozen graph file; None = the one in the installed `retinaface` wheel.
            min_score: drop detections scoring below this.
            max_side: downscale frames whose longer side exceeds this before detecting (boxes and landmarks
                are mapped back to frame pixels); None = full resolution.

        Raises:
            FileNotFoundError: no graph (the message says how to install the wheel).
        """
        from pipeline.faces.retinaface import FrozenGraph, packaged_graph

        path = Path(graph) if graph else packaged_graph()
        if not path.is_file():
            raise FileNotFoundError(f"RetinaFace graph not found at {path}")
        self.min_score = float(min_score)
        self.max_side = max_side
        self._graph = FrozenGraph(path)

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        import torch

        from pipeline.faces.retinaface import pad_to_stride

        _check_frame(rgb)
        image, scale = _downscale(rgb, self.max_side)
        padded = pad_to_stride(image)
        rows = self._graph(torch.from_numpy(padded)[None]).numpy()
        # Fractions of the padded image -> frame pixels.
        size = np.array([padded.shape[1], padded.shape[0]], dtype=np.float64)
        detections = []
        for row in rows:
            if row[15] < self.min_score:
                continue
            box = (row[0:4].reshape(2, 2) * size / scale).reshape(-1)
            points = row[4:14].reshape(5, 2) * size / scale
            detections.append(
                Detection(
                    box=tuple(float(v) for v in box),
                    score=float(row[15]),
                    # column 14 flags whether the graph's landmarks are valid for this face
                    landmarks5=points.astype(np.float32) if row[14] > 0.5 else None,
                )
            )
        return sorted(detections, key=lambda d: -d.score)


@register_detector("dlib_mmod")
class DlibMmodDetector:
    """dlib's CNN face detector (max-margin object detection, `dlib.cnn_face_detection_model_v1`) with the
    `mmod_human_face_detector.dat` weights shipped by the `face-recognition-models` wheel.

    dlib documents it as more tolerant of pose than HOG; its boxes are larger than HOG's (measured: 79 px
    where HOG gives 65 px). Boxes only, no landmarks. Scores are the network's detection margins: > 0 for
    every returned face, about 1.0-1.1 for clear frontal faces. Smallest face: a box of about 80 px at
    `upsample=0` (a face that HOG boxes at 65 px), half that with `upsample=1`. Slow on a CPU: measured here
    8-10 µs per pixel per call, i.e. 2.6 s for a 512×512 image, 1.5 s at 400×400 and 0.4 s per frame at
    `max_side=320` (bench/bench_detectors.py); each upsampling step quadruples that. Use `max_side` on
    video.
    """

    def __init__(
        self,
        upsample: int = 0,
        min_score: float = 0.0,
        max_side: int | None = None,
        model: str | os.PathLike[str] | None = None,
    ) -> None:
        """
        Args:
            upsample: times dlib upsamples the (downscaled) image before detecting (0-3; each step halves
                the smallest face and quadruples the time).
            min_score: drop detections scoring below this.
            max_side: downscale frames whose longer side exceeds this before detecting (boxes are mapped
                back to frame pixels); None = full resolution.
            model: path of an MMOD `.dat` file; None = `mmod_human_face_detector.dat` from the installed
                `face-recognition-models` wheel.

        Raises:
            ValueError: a keyword argument out of range, or `model` is a file that dlib cannot read as an
                MMOD network.
            FileNotFoundError: `model` is not a file.
            ImportError: `face-recognition-models` is needed (model=None) and not installed.
        """
        import dlib

        if isinstance(upsample, bool) or not isinstance(upsample, int | np.integer) or not 0 <= upsample <= 3:
            raise ValueError(f"upsample must be an integer from 0 to 3, got {upsample!r}")
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.max_side = _check_max_side(max_side)
        if model is None:
            models = _import_optional(
                "face_recognition_models", "dlib_mmod", "pip install face-recognition-models==0.3.0"
            )
            path = Path(models.cnn_face_detector_model_location())
        else:
            path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"dlib MMOD face detector weights not found at {path}: pass model= the path of an existing "
                "mmod_human_face_detector.dat, or model=None for the one in the face-recognition-models wheel"
            )
        self.model = path
        try:
            self._detector = dlib.cnn_face_detection_model_v1(str(path))
        except RuntimeError as error:
            raise ValueError(f"{path} is not a dlib MMOD detector model: {error}".strip()) from error

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        _check_frame(rgb)
        image, scale = _downscale(rgb, self.max_side)
        detections = []
        for found in self._detector(np.ascontiguousarray(image), self.upsample):
            rect = found.rect
            # dlib rectangles are inclusive on the right/bottom edge.
            box = (
                rect.left() / scale,
                rect.top() / scale,
                (rect.right() + 1) / scale,
                (rect.bottom() + 1) / scale,
            )
            if found.confidence >= self.min_score:
                detections.append(Detection(box=box, score=float(found.confidence)))
        return sorted(detections, key=lambda d: -d.score)


@register_detector("blazeface")
class BlazeFaceDetector:
    """MediaPipe's BlazeFace through `mediapipe.solutions.face_detection` (`mediapipe` 0.10.21, whose wheel
    ships the `.tflite` models; TFLite on the CPU with XNNPACK).

    `model=0` is the short-range model (128×128 input, faces within about 2 m of the camera); `model=1` the
    full-range one (192×192, sparse, up to about 5 m). The frame is letterboxed to the model's square input,
    so the smallest face is a fraction of the frame's longer side: measured here about 1/8 of it (80 px in a
    640-px-wide frame) for model 0 and about 1/16 (40 px) for model 1. Scores are probabilities (0-1).
    Speed measured here, one frame at a time: 2-3 ms (model 0) and 6-9 ms (model 1) per 640×360 or 960×540
    frame. On the fixture clips model 0 found every face and nothing on `no_face.mp4`; model 1 missed 6 of
    118 sampled close-up frames and fired on 2 of 24 face-less ones, so model 0 is the default.

    No `landmarks5`: BlazeFace gives 6 keypoints, the subject's right eye (image-left), left eye
    (image-right), nose tip, mouth centre, right and left ear tragion; with only the mouth's centre, not its
    corners, they cannot honestly fill this module's 5 points, so `landmarks5` is None and the pipeline
    aligns with the 5 points taken from dlib's 68 landmarks. Boxes are MediaPipe's (square, roughly brow to
    chin), in frame pixels.
    """

    def __init__(self, model: int = 0, min_score: float = 0.5) -> None:
        """
        Args:
            model: 0 = short-range model, 1 = full-range model (MediaPipe's `model_selection`).
            min_score: detection probability threshold (MediaPipe's `min_detection_confidence`), 0-1.

        Raises:
            ValueError: `model` not 0 or 1, or `min_score` outside [0, 1].
            ImportError: `mediapipe` (or its runtime needs, e.g. protobuf < 5) is not installed.
        """
        if isinstance(model, bool) or model not in (0, 1):
            raise ValueError(f"model must be 0 (short-range) or 1 (full-range), got {model!r}")
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be a probability in [0, 1], got {min_score!r}")
        self.model = int(model)
        self.min_score = float(min_score)
        mediapipe = _import_optional(
            "mediapipe", "blazeface", "pip install --no-deps mediapipe==0.10.21 'protobuf>=4.25.3,<5'"
        )
        self._detector = mediapipe.solutions.face_detection.FaceDetection(
            model_selection=self.model, min_detection_confidence=self.min_score
        )

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        _check_frame(rgb)
        height, width = rgb.shape[:2]
        result = self._detector.process(np.ascontiguousarray(rgb))
        detections = []
        for found in result.detections or []:
            score = float(found.score[0])
            if score < self.min_score:
                continue
            box = found.location_data.relative_bounding_box
            x1, y1 = box.xmin * width, box.ymin * height
            detections.append(
                Detection(box=(x1, y1, x1 + box.width * width, y1 + box.height * height), score=score)
            )
        return sorted(detections, key=lambda d: -d.score)

    def close(self) -> None:
        """Release MediaPipe's graph (also done when the detector is garbage-collected)."""
        self._detector.close()


@register_detector("mtcnn")
class MTCNNDetector:
    """MTCNN (cascaded P-Net, R-Net, O-Net; Zhang et al. 2016) from `facenet-pytorch` 2.6.0, whose wheel
    ships the three networks' weights; run by PyTorch on the CPU.

    Scores are O-Net face probabilities (MTCNN's stage thresholds 0.6/0.7/0.7 keep faces above 0.7;
    `min_score` filters further). Smallest face: `min_face_size` (default 20 px; P-Net's window is 12 px).
    Speed measured here: 60-90 ms per 640×360 or 960×540 frame on an idle machine (2 threads), 120-300 ms
    with other work running; most of it is P-Net's image pyramid, which `min_face_size` and `max_side`
    shrink. MTCNN's 5 landmarks are already in this module's
    order (image-left eye, image-right eye, nose, image-left and image-right mouth corners).
    """

    WEIGHTS = ("pnet.pt", "rnet.pt", "onet.pt")

    def __init__(
        self, min_score: float = 0.9, min_face_size: float = 20.0, max_side: int | None = None
    ) -> None:
        """
        Args:
            min_score: drop detections whose O-Net probability is below this (0-1).
            min_face_size: smallest face searched for, in frame pixels (at least 12 px of the image that is
                actually searched, after `max_side`).
            max_side: downscale frames whose longer side exceeds this before detecting (boxes and landmarks
                are mapped back to frame pixels); None = full resolution.

        Raises:
            ValueError: a keyword argument out of range.
            ImportError: `facenet-pytorch` is not installed.
            FileNotFoundError: its wheel lacks the network weights.
        """
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be a probability in [0, 1], got {min_score!r}")
        if not float(min_face_size) > 0:
            raise ValueError(f"min_face_size must be a positive number of pixels, got {min_face_size!r}")
        self.min_score = float(min_score)
        self.min_face_size = float(min_face_size)
        self.max_side = _check_max_side(max_side)
        install = "pip install --no-deps facenet-pytorch==2.6.0 (its metadata pins torch<2.3)"
        facenet = _import_optional("facenet_pytorch", "mtcnn", install)
        data = Path(facenet.__file__).parent / "data"
        missing = [name for name in self.WEIGHTS if not (data / name).is_file()]
        if missing:
            raise FileNotFoundError(f"MTCNN weights {missing} not found in {data}; reinstall: {install}")
        self._mtcnn = facenet.MTCNN(keep_all=True, min_face_size=self.min_face_size, device="cpu")
        self._mtcnn.eval()

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        import torch

        _check_frame(rgb)
        image, scale = _downscale(rgb, self.max_side)
        # The image pyramid starts at 12 px / min_face_size; min_face_size is in frame pixels.
        self._mtcnn.min_face_size = max(12.0, self.min_face_size * scale)
        with torch.inference_mode():
            boxes, scores, points = self._mtcnn.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None:
            return []
        detections = []
        for box, score, marks in zip(boxes, scores, points, strict=True):
            if score < self.min_score:
                continue
            detections.append(
                Detection(
                    box=tuple(float(v) / scale for v in box),
                    score=float(score),
                    landmarks5=(np.asarray(marks, dtype=np.float64) / scale).astype(np.float32),
                )
            )
        return sorted(detections, key=lambda d: -d.score)


@register_detector("retinaface_serengil")
class SerengilRetinaFaceDetector:
    """RetinaFace through serengil's `retina-face` package (TensorFlow/Keras), with a local weights file.

    This works only where `retina-face`, TensorFlow and the `retinaface.h5` weights file are all present;
    none of them is installable or downloadable on this project's offline CPU machines, so here it raises
    at construction. `retina-face` normally downloads its weights into `$DEEPFACE_HOME/.deepface/weights/`
    (`~/.deepface/weights/` in older releases); this wrapper never lets it download: it points the package at
    a private folder that holds only a link to `weights`. The TensorFlow-free port of the same network
    family, with weights shipped in a wheel, is the `retinaface` detector.

    Returned landmarks5 are in this module's order (image-left eye first); `retina-face` calls the
    image-left eye "right_eye" (the subject's right).
    """

    def __init__(self, weights: str | os.PathLike[str] | None = None, min_score: float = 0.9) -> None:
        """
        Args:
            weights: local path to retina-face's Keras weights file (`retinaface.h5`).
            min_score: detection probability threshold (retina-face's `threshold`).

        Raises:
            FileNotFoundError: `weights` not given or not a file.
            ImportError: `retina-face` or TensorFlow is not installed.
        """
        if not weights:
            raise FileNotFoundError(
                "the 'retinaface_serengil' detector needs a local weights file: pass "
                "weights=/path/to/retinaface.h5 "
                "(the Keras weights that serengil's retina-face downloads to "
                "~/.deepface/weights/retinaface.h5; copy that file from a machine with internet access). "
                "It also needs `pip install retina-face tensorflow`. Offline alternative without "
                "TensorFlow: detector 'retinaface' (the same network family, weights shipped in a wheel)."
            )
        self.weights = Path(weights)
        if not self.weights.is_file():
            raise FileNotFoundError(
                f"RetinaFace weights not found at {self.weights}: pass weights= the path of an existing "
                "retinaface.h5 (retina-face's Keras weights). This detector never downloads weights."
            )
        try:
            from retinaface import RetinaFace
        except ImportError as error:
            raise ImportError(
                "the 'retinaface_serengil' detector needs serengil's retina-face and TensorFlow "
                "(`pip install retina-face tensorflow`), which are not installable on this project's "
                "machines; use 'dlib_hog' or 'opencv_haar' instead"
            ) from error
        self.min_score = float(min_score)
        self._retinaface = RetinaFace
        self._model = self._build_model()

    def _build_model(self) -> Any:
        # retina-face loads <$DEEPFACE_HOME or, in older releases, $HOME>/.deepface/weights/retinaface.h5
        # and downloads it when missing; a private home holding a link to our file makes it load exactly
        # `weights` and never touch the network.
        home = tempfile.mkdtemp(prefix="affectflow_retinaface_")
        weights_dir = Path(home) / ".deepface" / "weights"
        weights_dir.mkdir(parents=True)
        (weights_dir / "retinaface.h5").symlink_to(self.weights.resolve())
        saved = {key: os.environ.get(key) for key in ("DEEPFACE_HOME", "HOME")}
        os.environ["DEEPFACE_HOME"] = home
        os.environ["HOME"] = home
        try:
            return self._retinaface.build_model()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """rgb: [H, W, 3] uint8. Returns detections sorted by decreasing score."""
        _check_frame(rgb)
        # retina-face expects OpenCV's BGR order (it flips to RGB internally).
        faces = self._retinaface.detect_faces(
            np.ascontiguousarray(rgb[:, :, ::-1]), threshold=self.min_score, model=self._model
        )
        if not isinstance(faces, dict):
            return []  # some older releases return a tuple of empty arrays when no face is found
        detections = []
        for face in faces.values():
            marks = face["landmarks"]
            points = [
                marks["right_eye"],
                marks["left_eye"],
                marks["nose"],
                marks["mouth_right"],
                marks["mouth_left"],
            ]
            detections.append(
                Detection(
                    box=tuple(float(v) for v in face["facial_area"]),
                    score=float(face["score"]),
                    landmarks5=np.asarray(points, dtype=np.float32),
                )
            )
        return sorted(detections, key=lambda d: -d.score)
