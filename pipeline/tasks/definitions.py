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
        derived_from: for a task without annotation files of its own, the tasks whose labels it is
            computed from (`DERIVED_TARGETS[name]` maps those tasks' label columns, `columns`, to this
            task's targets).
        predicted_from: for a task with no head of its own, the task whose outputs it is computed from
            (`PREDICTED_OUTPUTS[name]` maps that task's probabilities to this task's); training such a
            task trains its source.
    """

    name: str
    kind: str
    columns: tuple[str, ...]
    class_names: tuple[str, ...]
    invalid: float
    metric: str
    level: str = "frame"
    challenge_dirs: tuple[str, ...] = ()
    derived_from: tuple[str, ...] = ()  # tasks whose label columns this one's targets are computed from
    predicted_from: str = ""  # the task whose outputs this one's are computed from

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
    # Seed 002: the six basic emotions as independent labels (from the EXPR labels, Neutral = none of them;
    # and from compound labels, both of the pair), the target whose probabilities score the compound
    # classes. Not a challenge track.
    "basic": Task(
        name="basic",
        kind="multilabel",
        columns=("expr", "ce"),
        class_names=BASIC_EMOTIONS,
        invalid=-1,
        metric="mean_binary_f1",
        derived_from=("expr", "ce"),
    ),
    # C-EXPR-DB: 7 compound classes per frame, scored from the basic-emotion probabilities (seed 002).
    "ce": Task(
        name="ce",
        kind="multiclass",
        columns=("ce",),
        class_names=COMPOUND_CLASSES,
        invalid=-1,
        metric="macro_f1",
        predicted_from="basic",
    ),
    # Hume-Vidmimic2: 6 mimicry intensities in [0, 1] per video, scored by mean Pearson r.
    "emi": Task(
        name="emi",
        kind="regression",
        # Label columns named for the intensities: `emi_<i>` are the model's output columns
        # (`pipeline.features.sequences.output_columns`), and labels and outputs share one table.
        columns=tuple(name.lower().replace(" ", "_") for name in MIMICRY_NAMES),
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


# The two basic emotions of each compound class, in COMPOUND_CLASSES order.
COMPOUND_PAIRS: tuple[tuple[str, str], ...] = (
    ("Fear", "Surprise"),
    ("Happiness", "Surprise"),
    ("Sadness", "Surprise"),
    ("Disgust", "Surprise"),
    ("Anger", "Surprise"),
    ("Sadness", "Fear"),
    ("Sadness", "Anger"),
)
PAIR_INDEX = np.array([[BASIC_EMOTIONS.index(a), BASIC_EMOTIONS.index(b)] for a, b in COMPOUND_PAIRS])


def basic_emotions_from_compound(values: np.ndarray) -> np.ndarray:
    """Compound class indices [N, 1] -> basic-emotion targets float32 [N, 6]: the pair's two emotions
    positive, the other four negative; unlabelled frames (-1) invalid in every column."""
    ce = np.asarray(values).reshape(-1).astype(np.int64)
    out = np.zeros((len(ce), len(BASIC_EMOTIONS)), dtype=np.float32)
    labelled = ce >= 0
    rows = np.flatnonzero(labelled)
    out[rows, PAIR_INDEX[ce[labelled], 0]] = 1.0
    out[rows, PAIR_INDEX[ce[labelled], 1]] = 1.0
    out[~labelled] = -1.0
    return out


def basic_emotions(values: np.ndarray) -> np.ndarray:
    """Label columns (expr, ce) [N, 2] -> basic-emotion targets [N, 6]: from the EXPR label where it gives
    one (a basic class or Neutral), else from the compound label, else invalid."""
    values = np.asarray(values).reshape(len(values), 2)
    from_expr = basic_emotions_from_expr(values[:, :1])
    from_ce = basic_emotions_from_compound(values[:, 1:])
    use_expr = (from_expr != -1).all(axis=1)
    return np.where(use_expr[:, None], from_expr, from_ce).astype(np.float32)


def compound_from_basic(probabilities: np.ndarray) -> np.ndarray:
    """Basic-emotion probabilities [N, 6] -> compound-class probabilities [N, 7] (seed 002).

    A compound class scores the product of its two emotions' probabilities (both present, read as
    independent labels); the scores are normalised over the 7 classes, so the argmax is the challenge's
    decision and smoothing averages probabilities as for any classifier.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    scores = p[:, PAIR_INDEX[:, 0]] * p[:, PAIR_INDEX[:, 1]] + 1.0e-12
    return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


# task name -> function from the source tasks' label columns [N, k] (`Task.columns`) to its targets.
DERIVED_TARGETS = {"basic": basic_emotions}
# task name -> function from its source task's probabilities [N, C_source] to its own [N, C].
PREDICTED_OUTPUTS = {"ce": compound_from_basic}


def model_tasks(tasks: list[Task]) -> list[Task]:
    """The tasks a model has heads for: each task, or its `predicted_from` source, once, in order."""
    names = list(dict.fromkeys(task.predicted_from or task.name for task in tasks))
    return get_tasks(names)


def add_predicted(outputs: dict[str, np.ndarray], tasks: list[Task]) -> dict[str, np.ndarray]:
    """`outputs` (task -> [N, C] probabilities of the model's heads) plus every task of `tasks` computed
    from another's outputs (`PREDICTED_OUTPUTS`)."""
    out = dict(outputs)
    for task in tasks:
        if task.predicted_from:
            out[task.name] = PREDICTED_OUTPUTS[task.name](outputs[task.predicted_from])
    return out
