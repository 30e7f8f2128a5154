"""Write ABAW submission files from decided predictions (formats in `pipeline.submission.formats`).

Input schema (one polars DataFrame per task; the `<task>_pred` naming of the evaluation's decided tables):

| task | rows | columns |
|---|---|---|
| expr, ce | one per frame | track str, frame int (0-based decoded index), `<task>_pred` int class index |
| au | one per frame | track, frame, `au_pred` List/Array of 12 ints 0/1 (AU_NAMES order) |
| va | one per frame | track, frame, `va_pred` List/Array of 2 floats (valence, arousal) |
| emi | one per video | track str (the video name written in `Filename`), `emi_pred` List/Array of 6 floats |

Rows are written sorted by track (in `frame_list` order when given, else in order of first appearance in
`predictions`) then frame; location `<track>/<frame + 1:05d>.jpg`. Floats are clipped into the format's
range (VA [-1, 1], EMI [0, 1]) and written with 6 decimals; class indices and AU values as integers.
Anything else (a probability in a class-index column, an AU value that is not 0/1, a non-finite float, a
null, a duplicated row, a negative frame) raises ValueError naming the track and frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.submission.formats import (
    FrameList,
    SubmissionFormat,
    expected_locations,
    frame_location,
    get_format,
    location_track,
)
from pipeline.submission.validate import SubmissionError, validate_lines

DECIMALS = 6  # floats are written "%.6f"


def prediction_column(task_name: str) -> str:
    """The input column holding a task's decided values: `<task>_pred`."""
    return f"{task_name}_pred"


def _where(fmt: SubmissionFormat, table: pl.DataFrame, row: int) -> str:
    """'track X frame F' (or 'video X') of a row, for error messages."""
    if fmt.level == "video":
        return f"video '{table['track'][row]}'"
    return f"track '{table['track'][row]}' frame {table['frame'][row]}"


def decided_values(fmt: SubmissionFormat, table: pl.DataFrame) -> np.ndarray:
    """The decided values of `table`'s `<task>_pred` column, checked.

    Returns:
        class index: int64 [N]; binary: int64 [N, C] of 0/1; float: float64 [N, C] clipped into range.

    Raises:
        ValueError: wrong dtype or width, nulls, a value out of range, not 0/1 or not finite (names the
            first such row).
    """
    column = prediction_column(fmt.task)
    series = table[column]
    if series.null_count():
        row = int(series.is_null().arg_true()[0])
        raise ValueError(f"{column} is null for {_where(fmt, table, row)}")
    if fmt.value_kind == "class_index":
        if not series.dtype.is_integer():
            raise ValueError(
                f"{column} must hold one integer class index per row (0..{fmt.num_classes - 1}), "
                f"got dtype {series.dtype}; decide (argmax) before writing"
            )
        values = series.cast(pl.Int64).to_numpy()
        bad = np.flatnonzero((values < 0) | (values >= fmt.num_classes))
        if len(bad):
            raise ValueError(
                f"{column} = {values[bad[0]]} is out of range 0..{fmt.num_classes - 1} "
                f"for {_where(fmt, table, int(bad[0]))} ({len(bad)} rows)"
            )
        return values
    width = len(fmt.names)
    if isinstance(series.dtype, pl.Array):
        series = series.cast(pl.List(series.dtype.inner))
    if not isinstance(series.dtype, pl.List) or not series.dtype.inner.is_numeric():
        raise ValueError(
            f"{column} must be a List/Array of {width} numbers per row, got dtype {series.dtype}"
        )
    lengths = series.list.len().to_numpy()
    bad = np.flatnonzero(lengths != width)
    if len(bad):
        raise ValueError(
            f"{column} holds {lengths[bad[0]]} values for {_where(fmt, table, int(bad[0]))}, "
            f"expected {width} ({', '.join(fmt.names)})"
        )
    values = series.cast(pl.List(pl.Float64)).list.to_array(width).to_numpy().reshape(len(series), width)
    if fmt.value_kind == "binary":
        bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)).all(axis=1))
        if len(bad):
            raise ValueError(
                f"{column} must hold 0/1 per AU, got {values[bad[0]].tolist()} for "
                f"{_where(fmt, table, int(bad[0]))} ({len(bad)} rows); threshold before writing"
            )
        return values.astype(np.int64)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise ValueError(
            f"{column} is not finite for {_where(fmt, table, int(bad[0]))}: {values[bad[0]].tolist()} "
            f"({len(bad)} rows)"
        )
    low, high = fmt.value_range
    return np.clip(values, low, high)


def _track_order(fmt: SubmissionFormat, table: pl.DataFrame, expected: list[str] | None) -> list[str]:
    """Tracks in writing order: those of the expected locations, else first appearance in `table`."""
    present = table["track"].unique(maintain_order=True).to_list()
    if expected is None:
        return present
    order = list(dict.fromkeys(location_track(fmt, location) for location in expected))
    unknown = sorted(set(present) - set(order))
    if unknown:
        raise ValueError(
            f"tracks not in the frame list: {', '.join(unknown[:5])}{' ...' * (len(unknown) > 5)}"
        )
    return order


def submission_lines(
    task_name: str, predictions: pl.DataFrame, frame_list: FrameList | None = None
) -> list[str]:
    """The submission's lines without line endings: header, then one row per input row, sorted.

    Args:
        task_name: "va", "expr", "au", "ce" or "emi".
        predictions: the decided values, schema in the module docstring.
        frame_list: fixes the track order (as `validate_submission` takes it); None = first appearance.
    """
    fmt = get_format(task_name)
    expected = None if frame_list is None else expected_locations(fmt, frame_list)
    return _lines(fmt, predictions, expected)


def _lines(fmt: SubmissionFormat, predictions: pl.DataFrame, expected: list[str] | None) -> list[str]:
    task_name = fmt.task
    keys = ["track"] if fmt.level == "video" else ["track", "frame"]
    needed = [*keys, prediction_column(task_name)]
    absent = [column for column in needed if column not in predictions.columns]
    if absent:
        raise ValueError(f"{task_name} predictions need columns {needed}; missing {absent}")
    table = predictions.select(needed)
    if table["track"].null_count() or (fmt.level == "frame" and table["frame"].null_count()):
        raise ValueError(f"{task_name} predictions: null track or frame")
    if fmt.level == "frame":
        if not table["frame"].dtype.is_integer():
            raise ValueError(f"frame must be an integer frame index, got dtype {table['frame'].dtype}")
        if len(table) and table["frame"].min() < 0:
            row = int((table["frame"] < 0).arg_true()[0])
            raise ValueError(f"negative frame index for {_where(fmt, table, row)}")
    table = table.with_columns(pl.col("track").cast(pl.String))
    duplicated = table.select(keys).is_duplicated()
    if duplicated.any():
        row = int(duplicated.arg_true()[0])
        what = "one row per video" if fmt.level == "video" else "one row per (track, frame)"
        raise ValueError(f"{task_name} predictions need {what}; {_where(fmt, table, row)} appears twice")

    order = _track_order(fmt, table, expected)
    rank = {track: index for index, track in enumerate(order)}
    table = table.with_columns(pl.col("track").replace_strict(rank, return_dtype=pl.Int64).alias("_rank"))
    table = table.sort(["_rank", *keys[1:]], maintain_order=True)

    values = decided_values(fmt, table)
    tracks = table["track"].to_list()
    if fmt.level == "frame":
        frames = table["frame"].cast(pl.Int64).to_list()
        locations = [frame_location(track, frame) for track, frame in zip(tracks, frames, strict=True)]
    else:
        locations = tracks
    if fmt.value_kind == "class_index":
        cells = [str(value) for value in values.tolist()]
    elif fmt.value_kind == "binary":
        cells = [",".join(map(str, row)) for row in values.tolist()]
    else:
        rounded = np.round(values, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0 (no "-0.000000")
        cells = [",".join(f"{value:.{DECIMALS}f}" for value in row) for row in rounded.tolist()]
    return [fmt.header_line] + [f"{location},{cell}" for location, cell in zip(locations, cells, strict=True)]


def write_submission(
    task_name: str, predictions: pl.DataFrame, path: str | Path, frame_list: FrameList | None = None
) -> Path:
    """Write a task's submission CSV (header, sorted rows, `\\n` endings), atomically.

    Args:
        task_name: "va", "expr", "au", "ce" or "emi".
        predictions: the decided values, schema in the module docstring.
        path: the CSV to write (parent folders are created).
        frame_list: the expected frames (as `validate_submission` takes them: track -> number of frames,
            or locations; EMI: video names). When given, it fixes the track order and the file is checked
            against it before it is written.

    Raises:
        ValueError: malformed predictions (see the module docstring).
        SubmissionError: with `frame_list`, the rows do not cover it exactly (nothing is written).
    """
    fmt = get_format(task_name)
    expected = None if frame_list is None else expected_locations(fmt, frame_list)
    lines = _lines(fmt, predictions, expected)
    if expected is not None:
        problems = validate_lines(fmt, lines, expected)
        if problems:
            listed = "\n  ".join(problems[:10])
            raise SubmissionError(f"{path}: {task_name} predictions do not match the frame list:\n  {listed}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8", newline="\n") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(partial, path)
    return path
