"""The official ABAW test-submission file formats, described as data (see ../shared/docs/FORMATS.md).

One CSV per track, header line first, `\\n` line endings, no index column:

| task | location column | values per row | level |
|---|---|---|---|
| va | image_location | valence, arousal: floats in [-1, 1] | frame |
| expr | image_location | ONE class index 0..7 (the header names the 8 classes) | frame |
| au | image_location | 12 values 0/1 | frame |
| ce | image_location | ONE class index 0..6 (the header names the 7 compound classes) | frame |
| emi | Filename | 6 floats in [0, 1] | video |

Frame rows are located as `<track>/<k:05d>.jpg` with k = decoded frame index + 1 (1-based, 5 digits),
one row per frame of every test track, tracks in the given order, frames ascending. Video rows (EMI) are
located by the video name, one row per video in the given order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.tasks.definitions import AU_NAMES, COMPOUND_CLASSES, EXPR_CLASSES, MIMICRY_NAMES, VA_NAMES

VALUE_KINDS = ("class_index", "binary", "float")
LEVELS = ("frame", "video")


@dataclass(frozen=True)
class SubmissionFormat:
    """One track's submission file.

    Attributes:
        task: task name (`pipeline.tasks.definitions.TASKS` key).
        location_column: first header field ("image_location", or "Filename" for per-video files).
        names: the header's value columns (class, AU or dimension names), in order.
        level: "frame" (one row per frame, located `<track>/<k:05d>.jpg`) or "video" (one row per video).
        value_kind: "class_index" (one int 0..len(names)-1 per row, whatever the header's width),
            "binary" (len(names) values 0/1) or "float" (len(names) finite floats within `value_range`).
        value_range: inclusive (low, high) of "float" values (writers clip into it); None otherwise.
    """

    task: str
    location_column: str
    names: tuple[str, ...]
    level: str
    value_kind: str
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"submission '{self.task}': level must be one of {LEVELS}, got '{self.level}'")
        if self.value_kind not in VALUE_KINDS:
            raise ValueError(f"submission '{self.task}': value_kind must be one of {VALUE_KINDS}")
        if (self.value_kind == "float") != (self.value_range is not None):
            raise ValueError(f"submission '{self.task}': float values need a value_range, others none")

    @property
    def header(self) -> tuple[str, ...]:
        """The header fields: location column, then `names`."""
        return (self.location_column, *self.names)

    @property
    def header_line(self) -> str:
        """The header line exactly as written (without the line ending)."""
        return ",".join(self.header)

    @property
    def values_per_row(self) -> int:
        """Value fields after the location on each row: 1 for a class index, else len(names)."""
        return 1 if self.value_kind == "class_index" else len(self.names)

    @property
    def fields_per_row(self) -> int:
        """Comma-separated fields on each data row (location included)."""
        return 1 + self.values_per_row

    @property
    def num_classes(self) -> int:
        """Classes of a class-index format (= len(names))."""
        return len(self.names)

    def describe_values(self) -> str:
        """Human words for a row's values, for error messages."""
        if self.value_kind == "class_index":
            return f"one class index 0..{self.num_classes - 1}"
        if self.value_kind == "binary":
            return f"{len(self.names)} values 0/1"
        low, high = self.value_range
        return f"{len(self.names)} floats in [{low:g}, {high:g}]"


SUBMISSIONS: dict[str, SubmissionFormat] = {
    "va": SubmissionFormat("va", "image_location", VA_NAMES, "frame", "float", (-1.0, 1.0)),
    "expr": SubmissionFormat("expr", "image_location", EXPR_CLASSES, "frame", "class_index"),
    "au": SubmissionFormat("au", "image_location", AU_NAMES, "frame", "binary"),
    "ce": SubmissionFormat("ce", "image_location", COMPOUND_CLASSES, "frame", "class_index"),
    "emi": SubmissionFormat("emi", "Filename", MIMICRY_NAMES, "video", "float", (0.0, 1.0)),
}


def get_format(task_name: str) -> SubmissionFormat:
    """The submission format of a task; KeyError naming the known ones."""
    if task_name not in SUBMISSIONS:
        raise KeyError(f"no submission format for task '{task_name}' (known: {', '.join(SUBMISSIONS)})")
    return SUBMISSIONS[task_name]


def frame_location(track: str, frame: int) -> str:
    """`<track>/<k:05d>.jpg` for 0-based decoded frame index `frame` (k = frame + 1)."""
    if frame < 0:
        raise ValueError(f"track '{track}': frame index must be >= 0, got {frame}")
    return f"{track}/{frame + 1:05d}.jpg"


FrameList = Mapping[str, int] | Sequence[str]


def expected_locations(fmt: SubmissionFormat, frame_list: FrameList) -> list[str]:
    """The locations a submission must hold, in the required order.

    Args:
        fmt: the submission format.
        frame_list: frame level: a mapping track -> number of decoded frames T (locations frames 1..T of
            each track, tracks in mapping order) or an explicit sequence of locations; video level: the
            sequence of video names.

    Raises:
        ValueError: a negative frame count, or a mapping given for a video-level format.
    """
    if isinstance(frame_list, Mapping):
        if fmt.level == "video":
            raise ValueError(f"{fmt.task}: a per-video submission takes a list of video names, not a mapping")
        locations = []
        for track, n_frames in frame_list.items():
            if int(n_frames) < 0:
                raise ValueError(f"track '{track}': number of frames must be >= 0, got {n_frames}")
            locations.extend(frame_location(track, k) for k in range(int(n_frames)))
        return locations
    if isinstance(frame_list, str):
        raise TypeError("frame_list must be a mapping track -> frames or a list of locations, not one string")
    return [str(location) for location in frame_list]


def location_track(fmt: SubmissionFormat, location: str) -> str:
    """The track (frame level: the part before the last '/') or video (video level) of a location."""
    return location.rpartition("/")[0] if fmt.level == "frame" else location
