"""The affect tasks, described as data: label columns, invalid markers, output sizes.

Adding a track (compound expressions, mimicry intensity) means adding an entry here plus its loss and
metric, not new code paths in the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
VA_NAMES = ("valence", "arousal")


@dataclass(frozen=True)
class Task:
    """One prediction task.

    Attributes:
        name: short key used in params, metrics and file names.
        kind: "multiclass" (one int per frame), "multilabel" (0/1 per column) or "regression".
        columns: label-table columns holding the targets (one for multiclass: the class index).
        class_names: names of the outputs (classes, AUs or dimensions), in output order.
        invalid: marker for an unlabelled frame, as written in the annotation files.
        challenge_dirs: Aff-Wild2 annotation folder names for this task (first = preferred).
    """

    name: str
    kind: str
    columns: tuple[str, ...]
    class_names: tuple[str, ...]
    invalid: float
    challenge_dirs: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def valid_mask(self, targets: np.ndarray) -> np.ndarray:
        """[N] bool: frames whose targets carry a label. targets: [N] or [N, C]."""
        targets = np.asarray(targets)
        if targets.ndim == 1:
            return targets != self.invalid
        return (targets != self.invalid).all(axis=1)


TASKS: dict[str, Task] = {
    "expr": Task(
        name="expr",
        kind="multiclass",
        columns=("expr",),
        class_names=EXPR_CLASSES,
        invalid=-1,
        challenge_dirs=("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"),
    ),
    "au": Task(
        name="au",
        kind="multilabel",
        columns=AU_NAMES,
        class_names=AU_NAMES,
        invalid=-1,
        challenge_dirs=("AU_Detection_Challenge",),
    ),
    "va": Task(
        name="va",
        kind="regression",
        columns=VA_NAMES,
        class_names=VA_NAMES,
        invalid=-5,
        challenge_dirs=("VA_Estimation_Challenge",),
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}' (known: {', '.join(TASKS)})")
    return TASKS[name]
