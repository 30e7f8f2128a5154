"""Person tracks: detections linked over time, boxes carried between detection frames, one person's tracks
joined, and annotated tracks matched to people.

The faces stage runs the detector on every `detect_every`-th frame (and on the last one) and links each
detection frame's faces to the person tracks alive so far:
- every person track predicts its box on the new detection frame from its last box and velocity (constant
  velocity, so two people who cross keep moving the way they were going instead of swapping);
- predicted boxes and detections are paired by the Hungarian algorithm on 1 - IoU
  (`scipy.optimize.linear_sum_assignment`), pairs below `min_iou` are refused;
- an unpaired detection starts a new person track; a person track unseen for more than `max_gap` frames is
  closed, so a person who leaves and comes back later first gets a new id;
- when the video ends, person tracks that never share a frame and whose dlib face descriptors are closer
  than dlib's same-person distance are joined under the smaller id (`stitch_people`,
  `pipeline.faces.identity`): the person who came back is the same person again.
Between two detection frames where a person was found at both ends, the box is interpolated linearly and
the landmark model re-fits the face inside it (`origin = "tracked"` in the face table). Frames are buffered
until the next detection frame, so a person who leaves is never carried past their last detection.

Which person an annotated track is (`assign_people`): a one-person track `<video>` takes the person with the
most frames with a usable face (ties: the larger median face); `<video>_left` / `<video>_right` take the two
such people ordered by their median box centre, and when only one person is found, the side of the frame
their median centre lies in decides which track they are. People seen on fewer than `min_frames` frames
(stray false positives) are never chosen, unless the video has fewer decoded frames than that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class TrackingConfig:
    """Knobs of detection scheduling and person tracking (they change results: params.yaml)."""

    detect_every: int = 1  # run the detector on every k-th frame; boxes in between are tracked
    min_iou: float = 0.3  # least IoU between a predicted box and a detection to link them
    max_gap: int = 30  # frames a person track may go without a detection and keep its id
    max_faces: int = 8  # most faces followed per frame (the largest; crowds cost landmarks per face)
    min_frames: int = 3  # least frames with a usable face for a person to be chosen for a track

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if not 0.0 < self.min_iou < 1.0:
            raise ValueError(f"min_iou must be in (0, 1), got {self.min_iou}")
        if self.max_gap < 0 or self.max_faces < 1 or self.min_frames < 1:
            raise ValueError(
                f"max_gap >= 0, max_faces >= 1 and min_frames >= 1 expected, got {self.max_gap}, "
                f"{self.max_faces}, {self.min_frames}"
            )


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes [A, 4] and [B, 4] (x1, y1, x2, y2); returns [A, B] float64."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class _Person:
    person: int
    frame: int  # last detection frame
    box: np.ndarray  # [4] last detected box
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # [4] box change per frame

    def predict(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.frame)


class PersonTracker:
    """Links detections into person tracks, one detection frame at a time (frames must increase)."""

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.config = config or TrackingConfig()
        self.alive: list[_Person] = []
        self.next_id = 0
        self.last_frame = -1

    def update(self, frame: int, boxes: np.ndarray) -> list[int]:
        """Link the boxes [N, 4] found on `frame` to person tracks.

        Returns:
            The person id of each box, in input order (new ids for boxes that start a person track).
        """
        if frame <= self.last_frame:
            raise ValueError(f"detection frames must increase: {frame} after {self.last_frame}")
        self.last_frame = frame
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.alive = [p for p in self.alive if frame - p.frame <= self.config.max_gap]
        ids = [-1] * len(boxes)
        if self.alive and len(boxes):
            predicted = np.stack([p.predict(frame) for p in self.alive])
            overlap = iou_matrix(predicted, boxes)
            rows, cols = linear_sum_assignment(1.0 - overlap)
            for row, col in zip(rows, cols, strict=True):
                if overlap[row, col] >= self.config.min_iou:
                    person = self.alive[row]
                    # Smoothed velocity: one noisy box should not send the prediction off.
                    step = (boxes[col] - person.box) / (frame - person.frame)
                    person.velocity = 0.5 * person.velocity + 0.5 * step
                    person.box, person.frame = boxes[col].copy(), frame
                    ids[col] = person.person
        for col, person_id in enumerate(ids):
            if person_id < 0:
                self.alive.append(_Person(self.next_id, frame, boxes[col].copy()))
                ids[col] = self.next_id
                self.next_id += 1
        return ids


def interpolate_box(
    box_a: tuple[float, ...], frame_a: int, box_b: tuple[float, ...], frame_b: int, frame: int
) -> tuple[float, float, float, float]:
    """Linear interpolation of a box between two detection frames (frame_a < frame < frame_b)."""
    t = (frame - frame_a) / (frame_b - frame_a)
    a, b = np.asarray(box_a, dtype=np.float64), np.asarray(box_b, dtype=np.float64)
    return tuple(float(v) for v in (1 - t) * a + t * b)  # type: ignore[return-value]


@dataclass
class PersonSummary:
    """What `assign_people` needs to know about one person track."""

    person: int
    usable_frames: int  # frames with a usable face
    median_center_x: float  # frame pixels
    median_height: float  # frame pixels


def assign_people(
    people: list[PersonSummary], track_names: list[str], frame_width: float, min_frames: int = 1
) -> dict[str, int | None]:
    """Decide which person track each annotated track is (rule in the module docstring).

    Returns:
        {track name: person id, or None when no eligible person is found for it}.
    """
    eligible = sorted(
        (p for p in people if p.usable_frames >= min_frames),
        key=lambda p: (-p.usable_frames, -p.median_height, p.person),
    )
    chosen: dict[str, int | None] = {}
    sides = {name: _side(name) for name in track_names}
    plain = [name for name, side in sides.items() if side is None]
    for name in plain:
        chosen[name] = eligible[0].person if eligible else None
    sided = [name for name, side in sides.items() if side is not None]
    if sided:
        pair = sorted(eligible[:2], key=lambda p: p.median_center_x)
        by_side: dict[str, int | None] = {"left": None, "right": None}
        if len(pair) == 2:
            by_side = {"left": pair[0].person, "right": pair[1].person}
        elif len(pair) == 1:
            side = "left" if pair[0].median_center_x < frame_width / 2 else "right"
            by_side[side] = pair[0].person
        for name in sided:
            chosen[name] = by_side[sides[name]]  # type: ignore[index]
    return chosen


def _side(track_name: str) -> str | None:
    for side in ("left", "right"):
        if track_name.endswith(f"_{side}"):
            return side
    return None


def stitch_people(
    frames: dict[int, set[int]], descriptors: dict[int, np.ndarray], max_distance: float
) -> dict[int, int]:
    """Join person tracks that are one person seen at different times (left the frame and came back).

    Two person tracks are joined when they never share a frame and their mean face descriptors
    (`pipeline.faces.identity`) are closer than `max_distance`; the closest pairs are joined first, and a
    joined group keeps the smallest id. Tracks without a descriptor are left alone.

    Args:
        frames: {person: the frames it is seen on}.
        descriptors: {person: [D] mean descriptor}.
        max_distance: Euclidean distance below which two descriptors are the same person.

    Returns:
        {person: the id it is joined under} for every person in `frames`.
    """
    group = {person: person for person in frames}
    members = {person: {person} for person in frames}
    seen = {person: set(f) for person, f in frames.items()}
    people = sorted(p for p in descriptors if p in frames)
    pairs = sorted(
        (float(np.linalg.norm(descriptors[a] - descriptors[b])), a, b)
        for i, a in enumerate(people)
        for b in people[i + 1 :]
    )
    for distance, a, b in pairs:
        if distance >= max_distance:
            break
        ga, gb = group[a], group[b]
        if ga == gb or seen[ga] & seen[gb]:
            continue
        keep, gone = min(ga, gb), max(ga, gb)
        for person in members[gone]:
            group[person] = keep
        members[keep] |= members.pop(gone)
        seen[keep] |= seen.pop(gone)
    return group
