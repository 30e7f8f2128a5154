"""Check an ABAW submission file against its format and the expected frames (or videos).

`validate_submission` lists every problem it finds (empty list = valid); `check_submission` raises
`SubmissionError` with the first few. Line numbers are 1-based file lines (the header is line 1).

Checked: the exact header; the field count of each line; each location is in the frame list, appears
once, and rows follow the frame-list order (a row that comes after a later location is flagged once, at
the row where the order breaks); values: a class index is an integer in range (a probability is not),
AU values are 0 or 1, floats are finite and within the format's range; and no expected location is
missing (count and first few). Surrounding spaces in a field and `\\r\\n` line endings are tolerated.

CLI: `python -m pipeline.submission.validate TASK FILE FRAMELIST`, FRAMELIST a text file with the expected
locations one per line (`video/00001.jpg`; for EMI the video names), blank lines ignored. Prints
"ok: N rows" and exits 0, or prints the problems and exits 1.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from pipeline.submission.formats import (
    SUBMISSIONS,
    FrameList,
    SubmissionFormat,
    expected_locations,
    get_format,
)

MAX_PROBLEMS = 50  # line problems listed before "... and N more"
MISSING_SHOWN = 5  # missing locations named in the summary
_INTEGER = re.compile(r"^[+-]?\d+$")
_BINARY = {"0", "1"}


class SubmissionError(ValueError):
    """A submission file that does not follow its format (the message lists the first problems)."""


def _value_problem(fmt: SubmissionFormat, values: list[str]) -> str | None:
    """The first problem of a row's value fields (already split and stripped), or None."""
    if fmt.value_kind == "class_index":
        text = values[0]
        if not _INTEGER.match(text):
            return f"{text!r} is not a class index (an integer 0..{fmt.num_classes - 1})"
        if not 0 <= int(text) < fmt.num_classes:
            return f"class index {text} is out of range 0..{fmt.num_classes - 1}"
        return None
    if fmt.value_kind == "binary" and not set(values) - _BINARY:
        return None  # the common case, without the per-value loop below
    for name, text in zip(fmt.names, values, strict=True):
        if fmt.value_kind == "binary":
            if text not in ("0", "1"):
                return f"{name} = {text!r} is not 0 or 1"
            continue
        try:
            value = float(text)
        except ValueError:
            return f"{name} = {text!r} is not a number"
        if not math.isfinite(value):
            return f"{name} = {text!r} is not finite"
        low, high = fmt.value_range
        if not low <= value <= high:
            return f"{name} = {text} is outside [{low:g}, {high:g}]"
    return None


def validate_lines(
    fmt: SubmissionFormat, lines: list[str], expected: list[str], max_problems: int = MAX_PROBLEMS
) -> list[str]:
    """Problems of a submission's lines (header first, no line endings) against the expected locations.

    Args:
        fmt: the submission format.
        lines: the file's lines, line 1 = header.
        expected: [L] the locations required, in the required order (unique).
        max_problems: line problems listed before a "... and N more" line; the missing-location summary
            is always kept.
    """
    order: dict[str, int] = {}
    for index, location in enumerate(expected):
        if location in order:
            raise ValueError(
                f"the frame list holds '{location}' twice (entries {order[location] + 1}, {index + 1})"
            )
        order[location] = index
    problems: list[str] = []
    if not lines:
        return [f"the file is empty (expected the header '{fmt.header_line}')"]
    if lines[0].strip() != fmt.header_line:
        problems.append(f"line 1: header is {lines[0]!r}, expected {fmt.header_line!r}")
    n_fields = fmt.fields_per_row
    seen: dict[str, int] = {}  # location -> line number
    previous: tuple[int, str, int] | None = None  # (expected index, location, line) of the last known row
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            problems.append(f"line {number}: empty line")
            continue
        fields = [field.strip() for field in line.split(",")]
        location = fields[0]
        if location in seen:
            problems.append(
                f"line {number}: duplicate location '{location}' (first on line {seen[location]})"
            )
            continue
        seen[location] = number
        if location not in order:
            problems.append(f"line {number}: location '{location}' is not in the frame list")
        else:
            if previous is not None and order[location] < previous[0]:
                problems.append(
                    f"line {number}: '{location}' is out of order: it comes after '{previous[1]}' "
                    f"(line {previous[2]}) but precedes it in the frame list"
                )
            previous = (order[location], location, number)
        if len(fields) != n_fields:
            problems.append(
                f"line {number}: {len(fields)} fields, expected {n_fields} "
                f"({fmt.location_column} + {fmt.describe_values()})"
            )
            continue
        problem = _value_problem(fmt, fields[1:])
        if problem:
            problems.append(f"line {number}: {problem}")
    if len(problems) > max_problems:
        problems = problems[:max_problems] + [f"... and {len(problems) - max_problems} more problems"]
    missing = [location for location in expected if location not in seen]
    if missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
        problems.append(f"missing {len(missing)} of {len(expected)} expected locations (first: {shown})")
    return problems


def read_lines(path: str | Path) -> list[str]:
    """A text file's lines without line endings (`\\n` or `\\r\\n`); no final empty line."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def validate_submission(
    task_name: str, path: str | Path, frame_list: FrameList, max_problems: int = MAX_PROBLEMS
) -> list[str]:
    """Problems of a submission file; an empty list means it is valid.

    Args:
        task_name: "va", "expr", "au", "ce" or "emi" (`SUBMISSIONS`).
        path: the CSV file.
        frame_list: frame tasks: mapping track -> number of decoded frames, or the list of expected
            locations (`video/00001.jpg`); EMI: the list of video names. Its order is the required order.
        max_problems: line problems listed before "... and N more".
    """
    fmt = get_format(task_name)
    expected = expected_locations(fmt, frame_list)
    try:
        lines = read_lines(path)
    except (OSError, UnicodeDecodeError) as error:
        return [f"cannot read {path}: {error}"]
    return validate_lines(fmt, lines, expected, max_problems)


def check_submission(task_name: str, path: str | Path, frame_list: FrameList, shown: int = 10) -> int:
    """Validate a submission file and return its number of data rows.

    Raises:
        SubmissionError: naming the file, the number of problems and the first `shown` of them.
    """
    problems = validate_submission(task_name, path, frame_list)
    if problems:
        listed = "\n  ".join(problems[:shown])
        more = f"\n  ... ({len(problems) - shown} more)" if len(problems) > shown else ""
        raise SubmissionError(f"{path}: invalid {task_name} submission:\n  {listed}{more}")
    return len(read_lines(path)) - 1


def read_frame_list(path: str | Path) -> list[str]:
    """Expected locations (or EMI video names) from a text file, one per line, blank lines ignored."""
    return [line.strip() for line in read_lines(path) if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.submission.validate", description="Check an ABAW submission file."
    )
    parser.add_argument("task", choices=list(SUBMISSIONS), help="the track")
    parser.add_argument("file", type=Path, help="the submission CSV")
    parser.add_argument("framelist", type=Path, help="expected locations (EMI: video names), one per line")
    args = parser.parse_args(argv)
    try:
        expected = read_frame_list(args.framelist)
    except (OSError, UnicodeDecodeError) as error:
        print(f"cannot read the frame list {args.framelist}: {error}")
        return 1
    try:
        problems = validate_submission(args.task, args.file, expected)
    except ValueError as error:  # a frame list with duplicates
        print(f"{args.framelist}: {error}")
        return 1
    if problems:
        print(f"{args.file}: not a valid {args.task} submission")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"ok: {len(read_lines(args.file)) - 1} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
