"""The per-frame prediction table that `affectflow predict` writes: one row per decoded frame and person.

Column names follow what py-feat (`FaceRect*`, `x_0..`, `Pitch`, `AU01`, emotion names) and OpenFace
(`frame`, `face_id`, `timestamp`, `AU01_c`) users know. In `columns(tasks)` order:

- `video` str, `frame` int32 (0-based timeline index, `pipeline.datasets.video`), `timestamp` float64
  (seconds, frame / fps), `face_id` int32 (the person track; ids are per video).
- Face flags: `face_found` bool (a usable face of this person on this frame), `face_filled` bool (no usable
  face: the outputs come from the nearest frame with one), `face_rejected` bool (a face was found but
  rejected as too small, blurred, corrupt or badly landmarked), `face_reason` str (why there is no usable
  face, `pipeline.faces.table.REASONS`; null when found), `face_origin` str (`detected` on this frame or
  `tracked` between detections; null without a face), `outputs_from` str (`face`, `filled`, `prior`
  for a person who never shows a usable face, or `none` on the rows of a video where nobody was found:
  those rows have a null `face_id` and null outputs).
- Face geometry (null without a face): `FaceScore`, `FaceRectX`, `FaceRectY`, `FaceRectWidth`,
  `FaceRectHeight` (pixels), `x_0..x_67`, `y_0..y_67` (dlib's 68 points, pixels), `Pitch`, `Yaw`, `Roll`
  (degrees).
- EXPR (when the bundle has it): one probability per class, lower-case (`neutral`, `anger`, ..., `other`),
  and `expression` (the decided class name).
- AU: `AU01`, `AU02`, ... probabilities and `AU01_c`, ... decisions (0/1 with the bundle's thresholds).
- VA: `valence`, `arousal` in [-1, 1].
- CE: `compound_<class>` probabilities (lower case) and `compound` (the decided class name).
- EMI: `mimicry_<name>` (per person track: the same value on every row of the track).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.faces.table import NUM_LANDMARKS, points_array
from pipeline.tasks.definitions import Task

REJECTED_REASONS = ("small", "landmarks", "corrupt", "blurred")  # found by the detector, then rejected

ID_SCHEMA: dict[str, pl.DataType] = {
    "video": pl.String(),
    "frame": pl.Int32(),
    "timestamp": pl.Float64(),
    "face_id": pl.Int32(),
}
FLAG_SCHEMA: dict[str, pl.DataType] = {
    "face_found": pl.Boolean(),
    "face_filled": pl.Boolean(),
    "face_rejected": pl.Boolean(),
    "face_reason": pl.String(),
    "face_origin": pl.String(),
    "outputs_from": pl.String(),
}
GEOMETRY_SCHEMA: dict[str, pl.DataType] = {
    name: pl.Float32()
    for name in (
        "FaceScore",
        "FaceRectX",
        "FaceRectY",
        "FaceRectWidth",
        "FaceRectHeight",
        *(f"x_{i}" for i in range(NUM_LANDMARKS)),
        *(f"y_{i}" for i in range(NUM_LANDMARKS)),
        "Pitch",
        "Yaw",
        "Roll",
    )
}


def au_column(name: str) -> str:
    """'AU1' -> 'AU01' (two digits, as py-feat and OpenFace write them)."""
    return f"AU{int(name[2:]):02d}"


def output_columns(task: Task) -> list[str]:
    """The table's probability / value columns of one task (decisions not included)."""
    if task.name == "expr":
        return [name.lower() for name in task.class_names]
    if task.name == "au":
        return [au_column(name) for name in task.class_names]
    if task.name == "va":
        return list(task.class_names)
    if task.name == "ce":
        return [f"compound_{name.lower()}" for name in task.class_names]
    if task.name == "emi":
        return [f"mimicry_{name.lower().replace(' ', '_')}" for name in task.class_names]
    raise KeyError(f"task '{task.name}' has no columns in the prediction table")


def decision_columns(task: Task) -> list[str]:
    """The decided-label columns of one task ([] when the values are the decision)."""
    if task.name == "expr":
        return ["expression"]
    if task.name == "au":
        return [f"{au_column(name)}_c" for name in task.class_names]
    if task.name == "ce":
        return ["compound"]
    return []


def table_schema(tasks: Sequence[Task]) -> dict[str, pl.DataType]:
    """Column -> dtype of a prediction table for these tasks, in column order."""
    out = dict(ID_SCHEMA) | dict(FLAG_SCHEMA) | dict(GEOMETRY_SCHEMA)
    for task in tasks:
        out |= dict.fromkeys(output_columns(task), pl.Float32())
        decided = decision_columns(task)
        dtype = pl.Int8() if task.kind == "multilabel" else pl.String()
        out |= dict.fromkeys(decided, dtype)
    return out


def face_columns(face_table: pl.DataFrame, video: str, face_id: int, fps: float) -> pl.DataFrame:
    """The id, flag and geometry columns of one person track from its face table (one row per timeline
    frame, `pipeline.faces.table` schema); `outputs_from` is added later with the outputs."""
    n = face_table.height
    frames = face_table["frame"].to_numpy()
    if not np.array_equal(frames, np.arange(n)):
        raise ValueError(f"{video} face {face_id}: the face table must have one row per frame 0..{n - 1}")
    _, points = points_array(face_table["landmarks"], 2 * NUM_LANDMARKS)
    found = face_table["has_face"].to_numpy()
    box = face_table.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float32)
    columns: dict[str, object] = {
        "video": [video] * n,
        "frame": frames.astype(np.int32),
        "timestamp": frames / fps if fps > 0 else np.full(n, np.nan),
        "face_id": np.full(n, face_id, np.int32),
        "face_found": found,
        "face_filled": face_table["status"].to_numpy() == "filled",
        "face_rejected": face_table["reason"].is_in(list(REJECTED_REASONS)).fill_null(False).to_numpy(),
        "face_reason": face_table["reason"].to_list(),
        "face_origin": face_table["origin"].to_list(),
        "outputs_from": [None] * n,
        "FaceScore": face_table["score"].to_numpy(),
        "FaceRectX": box[:, 0],
        "FaceRectY": box[:, 1],
        "FaceRectWidth": box[:, 2] - box[:, 0],
        "FaceRectHeight": box[:, 3] - box[:, 1],
        **{f"x_{i}": points[:, 2 * i] for i in range(NUM_LANDMARKS)},
        **{f"y_{i}": points[:, 2 * i + 1] for i in range(NUM_LANDMARKS)},
        "Pitch": face_table["pitch"].to_numpy(),
        "Yaw": face_table["yaw"].to_numpy(),
        "Roll": face_table["roll"].to_numpy(),
    }
    table = pl.DataFrame(columns, schema=dict(ID_SCHEMA) | dict(FLAG_SCHEMA) | dict(GEOMETRY_SCHEMA))
    # NaN (nothing measured) becomes null, as in the face table: never a value a reader could mistake.
    return table.with_columns(pl.col(name).fill_nan(None) for name in GEOMETRY_SCHEMA)


def add_outputs(
    table: pl.DataFrame,
    tasks: Sequence[Task],
    values: dict[str, np.ndarray],
    decided: dict[str, np.ndarray],
    outputs_from: np.ndarray,
) -> pl.DataFrame:
    """Append the task columns to one person track's rows.

    Args:
        values: task -> [T, C] probabilities / values (smoothed), or [C] for a video-level task.
        decided: task -> [T] class index (multiclass) or [T, C] 0/1 (multilabel); regression tasks absent.
        outputs_from: [T] str, `TrackSequence.sources()`.
    """
    n = table.height
    new: list[pl.Series] = [
        pl.Series("outputs_from", np.asarray(outputs_from, dtype=object).tolist(), pl.String)
    ]
    for task in tasks:
        array = np.asarray(values[task.name], np.float32)
        if array.ndim == 1:  # a video-level value: on every row of the track
            array = np.broadcast_to(array, (n, len(array)))
        if array.shape != (n, task.num_outputs):
            raise ValueError(
                f"task {task.name}: outputs of shape {array.shape}, expected ({n}, {task.num_outputs})"
            )
        new += [pl.Series(name, array[:, j], pl.Float32) for j, name in enumerate(output_columns(task))]
        if task.kind == "multiclass" and task.name in decided:
            names = np.asarray(task.class_names, dtype=object)[np.asarray(decided[task.name], np.int64)]
            new.append(pl.Series(decision_columns(task)[0], names.tolist(), pl.String))
        elif task.kind == "multilabel" and task.name in decided:
            flags = np.asarray(decided[task.name], np.int8)
            new += [pl.Series(name, flags[:, j], pl.Int8) for j, name in enumerate(decision_columns(task))]
    return table.with_columns(new)


def check_prediction_table(table: pl.DataFrame, tasks: Sequence[Task], where: str) -> None:
    """The table has exactly the schema of `table_schema(tasks)` and one row per (face_id, frame)."""
    expected = table_schema(tasks)
    if list(table.columns) != list(expected):
        missing = [c for c in expected if c not in table.columns]
        extra = [c for c in table.columns if c not in expected]
        raise ValueError(f"{where}: columns differ from the schema (missing {missing}, unexpected {extra})")
    wrong = {c: str(table.schema[c]) for c, dtype in expected.items() if table.schema[c] != dtype}
    if wrong:
        raise ValueError(f"{where}: column types differ from the schema: {wrong}")
    if table.select(pl.struct("face_id", "frame").is_duplicated().any()).item():
        raise ValueError(f"{where}: a (face_id, frame) pair occurs twice")
