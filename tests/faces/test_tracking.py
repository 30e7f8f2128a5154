"""Person tracks: linking, crossing without swaps, short occlusions, gaps, and the person-to-track rule."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.faces.tracking import (
    PersonSummary,
    PersonTracker,
    TrackingConfig,
    assign_people,
    interpolate_box,
    iou_matrix,
    stitch_people,
)


def _box(cx: float, cy: float = 100.0, side: float = 60.0) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_iou_matrix_against_hand_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    iou = iou_matrix(a, b)
    np.testing.assert_allclose(iou[0], [50 / 150, 0.0, 1.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])  # a degenerate box overlaps nothing, no NaN
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_a_moving_face_keeps_its_id() -> None:
    tracker = PersonTracker(TrackingConfig(detect_every=1))
    ids = [tracker.update(frame, [_box(100 + 8 * frame)])[0] for frame in range(30)]
    assert set(ids) == {0}


def test_two_people_crossing_keep_their_ids() -> None:
    """Two faces walk past each other; while they overlap only the front one is detected (occlusion)."""
    tracker = PersonTracker(TrackingConfig(detect_every=1, max_gap=10))
    left_to_right = {}
    right_to_left = {}
    for frame in range(40):
        a, b = 50 + 10 * frame, 450 - 10 * frame  # centres; they meet at frame 20
        boxes = [_box(a), _box(b)]
        if abs(a - b) < 60:  # overlapping: person b is hidden behind person a
            boxes = [_box(a)]
        ids = tracker.update(frame, boxes)
        left_to_right[frame] = ids[0]
        if len(ids) == 2:
            right_to_left[frame] = ids[1]
    assert set(left_to_right.values()) == {0}
    assert set(right_to_left.values()) == {1}, "identities swapped or were reset when the people crossed"


def test_short_occlusion_survives_and_long_gap_starts_a_new_person() -> None:
    tracker = PersonTracker(TrackingConfig(max_gap=5))
    assert tracker.update(0, [_box(100)]) == [0]
    assert tracker.update(1, [_box(100)]) == [0]
    assert tracker.update(2, np.zeros((0, 4))) == []
    assert tracker.update(5, [_box(100)]) == [0]  # unseen for 4 frames: same person
    assert tracker.update(20, [_box(100)]) == [1]  # unseen for 15 > max_gap frames: a new id


def test_a_face_far_away_is_another_person() -> None:
    tracker = PersonTracker()
    tracker.update(0, [_box(100)])
    assert tracker.update(1, [_box(400)]) == [1]
    with pytest.raises(ValueError, match="must increase"):
        tracker.update(1, [_box(400)])


def test_interpolate_box() -> None:
    box = interpolate_box((0, 0, 10, 10), 0, (10, 20, 30, 40), 4, 1)
    np.testing.assert_allclose(box, (2.5, 5, 15, 17.5))


def _person(person: int, frames: int, x: float, height: float = 100.0) -> PersonSummary:
    return PersonSummary(person=person, usable_frames=frames, median_center_x=x, median_height=height)


def test_main_face_is_the_person_seen_longest() -> None:
    people = [_person(0, 50, 300, 200), _person(1, 80, 100, 60), _person(2, 2, 500, 300)]
    assert assign_people(people, ["clip"], 640, min_frames=3) == {"clip": 1}
    # tie on frames: the larger median face
    assert assign_people([_person(0, 80, 300, 50), _person(1, 80, 100, 90)], ["clip"], 640) == {"clip": 1}
    assert assign_people([_person(2, 2, 500)], ["clip"], 640, min_frames=3) == {"clip": None}


def test_left_and_right_tracks_take_the_two_main_people_by_position() -> None:
    people = [_person(0, 90, 500), _person(1, 85, 120), _person(2, 4, 300)]
    names = ["v_left", "v_right"]
    assert assign_people(people, names, 640) == {"v_left": 1, "v_right": 0}
    # one person only: the half of the frame they are in decides
    assert assign_people([_person(3, 40, 500)], names, 640) == {"v_left": None, "v_right": 3}
    assert assign_people([_person(3, 40, 100)], names, 640) == {"v_left": 3, "v_right": None}
    assert assign_people([], names, 640) == {"v_left": None, "v_right": None}


@pytest.mark.parametrize(
    "kwargs", [{"detect_every": 0}, {"min_iou": 0.0}, {"min_iou": 1.0}, {"max_faces": 0}, {"max_gap": -1}]
)
def test_bad_tracking_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrackingConfig(**kwargs)


def test_stitch_people_joins_one_person_who_came_back() -> None:
    same, other = np.zeros(4), np.array([1.0, 0, 0, 0])
    frames = {0: {0, 1, 2}, 1: {10, 11}, 2: {5, 6}, 3: {1, 2, 3}}
    descriptors = {0: same, 1: same + 0.01, 2: other, 3: same + 0.02}
    joined = stitch_people(frames, descriptors, max_distance=0.6)
    assert joined[1] == 0  # the same face after a gap
    assert joined[2] == 2  # another person
    assert joined[3] == 3  # the same descriptor but on screen at the same time: two people
    assert stitch_people({0: {1}, 1: {2}}, {0: same}, 0.6) == {0: 0, 1: 1}  # no descriptor: left alone


def test_face_descriptors_tell_people_apart(fixture_videos) -> None:
    """dlib's descriptor: one person in two clips' frames stays close, two people are far apart."""
    from pipeline.datasets.video import TimelineDecoder
    from pipeline.faces.detectors import create_detector
    from pipeline.faces.identity import SAME_PERSON_DISTANCE, FaceDescriber
    from pipeline.faces.landmarks import LandmarkPredictor

    detector, predictor, describe = create_detector("dlib_hog"), LandmarkPredictor(), FaceDescriber()

    def descriptor(video: str, frame: int) -> np.ndarray:
        decoder = TimelineDecoder(fixture_videos / video)
        rgb = next(rgb for index, rgb in decoder if index == frame)
        decoder.close()
        box = detector(rgb)[0].box
        return describe(rgb, box, predictor(rgb, box))

    a0, a1 = descriptor("single_face.mp4", 0), descriptor("single_face.mp4", 60)
    b0 = descriptor("WolfgangLanger_Pexels.mp4", 100)
    assert np.linalg.norm(a0 - a1) < SAME_PERSON_DISTANCE
    assert np.linalg.norm(a0 - b0) > SAME_PERSON_DISTANCE
