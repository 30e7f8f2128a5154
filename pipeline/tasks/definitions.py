"""The affect tasks, described as data: label columns, invalid markers, outputs, kind, level and metric.

This module is plain data (no torch), so dataset readers and the demo depend on nothing else. Behaviour
comes from the task's kind (`pipeline.tasks.kinds`) and its metric (`pipeline.tasks.scores.METRICS`), never
from `if task.name == ...`. Adding a track is adding one `Task` entry here plus its dataset reader.

Levels: a "frame" task has one target per frame; a "video" task has one target per track (stored on
every frame of the track's label table, so both levels travel in the same tables), its model output is
pooled over the frames of a window and it is scored with one row per track.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
VA_NAMES = ("valence", "arousal")
COMPOUND_CLASSES = (
    "Fearfully_Surprised",
    "Happily_Surprised",
    "Sadly_Surprised",
    "Disgustedly_Surprised",
    "Angrily_Surprised",
    "Sadly_Fearful",
    "Sadly_Angry",
)
# Seed 002's multi-label basic-emotion classifier: the six basic emotions of the EXPR classes.
BASIC_EMOTIONS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
MIMICRY_NAMES = ("Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy")


@dataclass(frozen=True)
class Task:
    """One prediction task.

    Attributes:
        name: short key used in params, metrics and file names.
        kind: a `pipeline.tasks.kinds.KINDS` name: "multiclass", "multilabel" or "regression".
        columns: label-table columns holding the targets (one for multiclass: the class index).
        class_names: names of the outputs (classes, AUs or dimensions), in output order.
        invalid: marker for an unlabelled row, as written in the annotation files.
        metric: a `pipeline.tasks.scores.METRICS` name (the official metric of the track).
        level: "frame" (one target per frame) or "video" (one target per track).
        challenge_dirs: Aff-Wild2 annotation folder names for this task (first = preferred); empty for
            tasks read from other datasets.
        derived_from: for a task without annotation files of its own, the task whose labels it is computed
            from (`DERIVED_TARGETS[name]` maps that task's label columns to this task's targets).
    """

    name: str
    kind: str
    columns: tuple[str, ...]
    class_names: tuple[str, ...]
    invalid: float
    metric: str
    level: str = "frame"
    challenge_dirs: tuple[str, ...] = ()
    derived_from: str = ""  # another task whose label columns this one's targets are computed from

    def __post_init__(self) -> None:
        if self.level not in ("frame", "video"):
            raise ValueError(f"task '{self.name}': level must be 'frame' or 'video', got '{self.level}'")

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def valid_mask(self, targets: np.ndarray) -> np.ndarray:
        """[N] bool: rows whose targets ([N] or [N, C]) carry a label (no invalid marker in any column)."""
        valid = np.asarray(targets) != self.invalid
        return valid if valid.ndim == 1 else valid.all(axis=1)


TASKS: dict[str, Task] = {
    "expr": Task(
        name="expr",
        kind="multiclass",
        columns=("expr",),
        class_names=EXPR_CLASSES,
        invalid=-1,
        metric="macro_f1",
        challenge_dirs=("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"),
    ),
    "au": Task(
        name="au",
        kind="multilabel",
        columns=AU_NAMES,
        class_names=AU_NAMES,
        invalid=-1,
        metric="mean_binary_f1",
        challenge_dirs=("AU_Detection_Challenge",),
    ),
    "va": Task(
        name="va",
        kind="regression",
        columns=VA_NAMES,
        class_names=VA_NAMES,
        invalid=-5,
        metric="mean_ccc",
        challenge_dirs=("VA_Estimation_Challenge",),
    ),
    # Seed 002: the six basic emotions as independent labels (from the EXPR labels; Neutral = none of them),
    # the fine-tuning target whose probabilities score the compound classes. Not a challenge track.
    "basic": Task(
        name="basic",
        kind="multilabel",
        columns=("expr",),
        class_names=BASIC_EMOTIONS,
        invalid=-1,
        metric="mean_binary_f1",
        derived_from="expr",
    ),
    # C-EXPR-DB: 7 compound classes per frame (seed 002); the reader comes with issue 9.
    "ce": Task(
        name="ce",
        kind="multiclass",
        columns=("ce",),
        class_names=COMPOUND_CLASSES,
        invalid=-1,
        metric="macro_f1",
    ),
    # Hume-Vidmimic2: 6 mimicry intensities in [0, 1] per video, scored by mean Pearson r.
    "emi": Task(
        name="emi",
        kind="regression",
        columns=tuple(f"emi_{i}" for i in range(len(MIMICRY_NAMES))),
        class_names=MIMICRY_NAMES,
        invalid=-5,
        metric="mean_pearson",
        level="video",
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}' (known: {', '.join(TASKS)})")
    return TASKS[name]


def get_tasks(names: list[str] | tuple[str, ...]) -> list[Task]:
    return [get_task(name) for name in names]


def basic_emotions_from_expr(values: np.ndarray) -> np.ndarray:
    """EXPR class indices [N, 1] -> basic-emotion targets float32 [N, 6] (seed 002's multi-label form).

    A basic expression is one positive label; Neutral is all zeros (none of the six); "Other" and unlabelled
    frames are invalid (-1 in every column), since "Other" may hold any mixture of the six.
    """
    expr = np.asarray(values).reshape(-1).astype(np.int64)
    out = np.zeros((len(expr), len(BASIC_EMOTIONS)), dtype=np.float32)
    for i, name in enumerate(BASIC_EMOTIONS):
        out[expr == EXPR_CLASSES.index(name), i] = 1.0
    out[(expr < 0) | (expr == EXPR_CLASSES.index("Other"))] = -1.0
    return out


# task name -> function from the source task's label columns [N, k] to this task's targets.
DERIVED_TARGETS = {"basic": basic_emotions_from_expr}
