"""The one label-table layout every dataset reader writes: `frame` plus the label columns of every task
read from annotation files (EXPR, AU, VA, CE, EMI), in `TASKS` order, each task's invalid marker where a
track has no label for it. Tracks of different datasets (Aff-Wild2, C-EXPR-DB, Hume-Vidmimic2) then join
and stack without nulls."""

from __future__ import annotations

import polars as pl

from pipeline.tasks.definitions import TASKS, Task

# Tasks whose labels come from files (derived tasks are computed from these columns).
FILE_TASKS: tuple[Task, ...] = tuple(task for task in TASKS.values() if not task.derived_from)


def column_dtype(task: Task) -> pl.DataType:
    return pl.Float32 if task.kind == "regression" else pl.Int8


def complete_labels(table: pl.DataFrame) -> pl.DataFrame:
    """`table` (label columns of some tasks, after its `frame` column if any) with every file task's
    columns, in the one order; a missing column holds its task's invalid marker on every row."""
    columns = [pl.col("frame").cast(pl.Int32)] if "frame" in table.columns else []
    for task in FILE_TASKS:
        for column in task.columns:
            value = pl.col(column) if column in table.columns else pl.lit(task.invalid)
            columns.append(value.cast(column_dtype(task)).alias(column))
    return table.select(columns)


def owner(column: str) -> Task:
    """The file task a label column belongs to."""
    for task in FILE_TASKS:
        if column in task.columns:
            return task
    raise KeyError(f"no task has the label column '{column}'")
