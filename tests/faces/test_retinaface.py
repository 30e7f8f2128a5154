"""RetinaFace's frozen TensorFlow graph, run by torch, matches the original network's outputs (computed with
TensorFlow 2.21 and stored in ../shared/fixtures/retinaface_reference.json)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from pipeline.faces.detectors import create_detector
from pipeline.faces.graphdef import read_graph
from pipeline.faces.retinaface import FrozenGraph, non_max_suppression, packaged_graph, pad_to_stride

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "fixtures" / "retinaface_reference.json"


@pytest.fixture(scope="module")
def graph() -> FrozenGraph:
    return FrozenGraph(packaged_graph())


def reference_cases() -> list[dict]:
    if not REFERENCE.is_file():
        return []
    return json.loads(REFERENCE.read_text())["cases"]


def case_image(case: dict, videos: Path) -> np.ndarray:
    if case["frame"] is None:
        return data.astronaut()
    capture = cv2.VideoCapture(str(videos / case["source"]))
    for _ in range(case["frame"] + 1):  # decoded in order from frame 0, as the reference was
        ok, bgr = capture.read()
        assert ok
    capture.release()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("case", reference_cases(), ids=lambda c: f"{c['source']}@{c['frame']}")
def test_the_graph_matches_tensorflow_on_every_reference_image(case, graph, fixture_videos):
    image = case_image(case, fixture_videos)
    padded = pad_to_stride(image)
    assert padded.shape[:2] == (case["padded_height"], case["padded_width"])
    rows = graph(torch.from_numpy(padded)[None]).numpy()
    expected = np.asarray(case["rows"], dtype=np.float64).reshape(-1, 16)
    assert rows.shape == expected.shape  # the same faces found (none on a face-less frame)
    np.testing.assert_allclose(rows, expected, atol=1e-5)  # the reference is rounded to 6 decimals


def test_reference_file_is_there_when_the_fixtures_are():
    if not REFERENCE.parent.is_dir():
        pytest.skip("../shared/fixtures is absent")
    assert len(reference_cases()) >= 2


def test_the_detector_gives_frame_pixels_and_image_left_eye_first():
    astronaut = data.astronaut()
    (face,) = create_detector("retinaface")(astronaut)
    x1, y1, x2, y2 = face.box
    assert face.score > 0.99 and 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200
    eyes, nose, mouth = face.landmarks5[:2], face.landmarks5[2], face.landmarks5[3:]
    assert (
        eyes[0, 0] < eyes[1, 0]
        and mouth[0, 0] < mouth[1, 0]
        and eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    )
    # Downscaling for speed maps back to the same pixels (within the resolution lost).
    (small,) = create_detector("retinaface", max_side=256)(astronaut)
    np.testing.assert_allclose(small.box, face.box, atol=6)
    assert create_detector("retinaface", min_score=1.01)(astronaut) == []


def test_nms_follows_tensorflow():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 20, 10, 30], [0, 0, 10, 10]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.95, 0.8, 0.3])
    # IoU(0, 1) = 81 / 119 > 0.4: box 0 is suppressed by the higher-scoring box 1; box 3 scores below 0.5.
    assert non_max_suppression(boxes, scores, 10, 0.4, 0.5).tolist() == [1, 2]
    assert non_max_suppression(boxes, scores, 1, 0.4, 0.5).tolist() == [1]


def test_a_file_that_is_not_a_graph_is_named(tmp_path):
    bogus = tmp_path / "frozen_graph.pb"
    bogus.write_bytes(b"\xff\xff\xff\xff\xff")
    with pytest.raises(ValueError, match="frozen_graph.pb: not a TensorFlow GraphDef"):
        read_graph(bogus)
    with pytest.raises(FileNotFoundError, match="RetinaFace graph not found"):
        create_detector("retinaface", graph=str(tmp_path / "absent.pb"))
