"""ABAW submission files: write -> validate round trips for every track, and every failure mode named."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.submission import (
    SUBMISSIONS,
    SubmissionError,
    check_submission,
    expected_locations,
    frame_location,
    validate_submission,
    write_submission,
)
from pipeline.submission.validate import main
from pipeline.tasks.definitions import AU_NAMES, COMPOUND_CLASSES, EXPR_CLASSES, MIMICRY_NAMES

REPO = Path(__file__).resolve().parents[2]
# Track order as the challenge lists it (not sorted); "solo" has a single frame.
FRAMES = {"video9": 4, "solo": 1, "10-60-1280x720_right": 3}
VIDEOS = ["00042", "00007", "00100"]


def predictions(task: str, seed: int = 0) -> pl.DataFrame:
    """Decided predictions for every frame of FRAMES (or every video of VIDEOS), rows shuffled."""
    rng = np.random.default_rng(seed)
    if task == "emi":
        values = rng.uniform(0, 1, (len(VIDEOS), len(MIMICRY_NAMES)))
        return pl.DataFrame({"track": VIDEOS, "emi_pred": values.tolist()})
    rows = [(track, frame) for track, n in FRAMES.items() for frame in range(n)]
    n = len(rows)
    table = pl.DataFrame({"track": [t for t, _ in rows], "frame": [f for _, f in rows]})
    if task in ("expr", "ce"):
        classes = len(EXPR_CLASSES if task == "expr" else COMPOUND_CLASSES)
        table = table.with_columns(pl.Series(f"{task}_pred", rng.integers(0, classes, n)))
    elif task == "au":
        table = table.with_columns(pl.Series("au_pred", rng.integers(0, 2, (n, len(AU_NAMES))).tolist()))
    else:
        table = table.with_columns(pl.Series("va_pred", rng.uniform(-1, 1, (n, 2)).tolist()))
    return table.sample(fraction=1.0, shuffle=True, seed=seed)


def frame_list(task: str) -> dict[str, int] | list[str]:
    return VIDEOS if task == "emi" else FRAMES


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


# ------------------------------------------------------------------------------------------ formats


def test_registry_headers_follow_the_task_definitions():
    assert set(SUBMISSIONS) == {"va", "expr", "au", "ce", "emi"}
    assert SUBMISSIONS["va"].header_line == "image_location,valence,arousal"
    assert SUBMISSIONS["expr"].header_line == (
        "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    )
    assert SUBMISSIONS["au"].header_line == (
        "image_location,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
    )
    assert SUBMISSIONS["ce"].header_line == (
        "image_location,Fearfully_Surprised,Happily_Surprised,Sadly_Surprised,Disgustedly_Surprised,"
        "Angrily_Surprised,Sadly_Fearful,Sadly_Angry"
    )
    assert SUBMISSIONS["emi"].header_line == (
        "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"
    )
    assert [SUBMISSIONS[t].fields_per_row for t in ("va", "expr", "au", "ce", "emi")] == [3, 2, 13, 2, 7]
    assert SUBMISSIONS["emi"].level == "video" and SUBMISSIONS["au"].level == "frame"


def test_frame_locations_are_one_based_five_digits():
    assert frame_location("01", 0) == "01/00001.jpg"
    assert frame_location("video9", 1233) == "video9/01234.jpg"
    assert expected_locations(SUBMISSIONS["expr"], {"b": 2, "a": 1}) == [
        "b/00001.jpg",
        "b/00002.jpg",
        "a/00001.jpg",
    ]
    with pytest.raises(ValueError, match=">= 0"):
        frame_location("x", -1)


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("task", ["va", "expr", "au", "ce", "emi"])
def test_round_trip(task, tmp_path):
    table = predictions(task)
    path = write_submission(task, table, tmp_path / f"{task}.csv", frame_list=frame_list(task))
    assert validate_submission(task, path, frame_list(task)) == []
    assert check_submission(task, path, frame_list(task)) == table.height
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw

    rows = read_rows(path)
    fmt = SUBMISSIONS[task]
    assert rows[0] == list(fmt.header)
    expected = expected_locations(fmt, frame_list(task))
    assert [row[0] for row in rows[1:]] == expected
    if task == "emi":
        by_location = {track: values for track, values in zip(table["track"], table["emi_pred"], strict=True)}
    else:
        by_location = {
            frame_location(track, frame): values
            for track, frame, values in zip(
                table["track"], table["frame"], table[f"{task}_pred"], strict=True
            )
        }
    for row in rows[1:]:
        want = by_location[row[0]]
        if fmt.value_kind == "class_index":
            assert row[1:] == [str(want)]
        elif fmt.value_kind == "binary":
            assert [int(v) for v in row[1:]] == list(want)
        else:
            np.testing.assert_allclose([float(v) for v in row[1:]], want, atol=5e-7)
            assert all(len(v.split(".")[1]) == 6 for v in row[1:])


def test_round_trip_with_explicit_location_list(tmp_path):
    locations = expected_locations(SUBMISSIONS["au"], FRAMES)
    path = write_submission("au", predictions("au"), tmp_path / "au.csv", frame_list=locations)
    assert validate_submission("au", path, locations) == []


def test_track_with_one_frame(tmp_path):
    table = pl.DataFrame({"track": ["only"], "frame": [0], "ce_pred": [6]})
    path = write_submission("ce", table, tmp_path / "ce.csv", frame_list={"only": 1})
    assert path.read_text() == SUBMISSIONS["ce"].header_line + "\nonly/00001.jpg,6\n"
    assert validate_submission("ce", path, {"only": 1}) == []


def test_expr_file_holds_class_indices_not_probabilities(tmp_path):
    path = write_submission("expr", predictions("expr"), tmp_path / "expr.csv", frame_list=FRAMES)
    for row in read_rows(path)[1:]:
        assert len(row) == 2 and row[1].isdigit() and 0 <= int(row[1]) < len(EXPR_CLASSES)
    probabilities = predictions("expr").with_columns(pl.col("expr_pred").cast(pl.Float64) / 10)
    with pytest.raises(ValueError, match="integer class index"):
        write_submission("expr", probabilities, tmp_path / "probs.csv")


def test_rows_sorted_by_given_track_order_then_frame(tmp_path):
    table = predictions("expr")
    path = write_submission("expr", table, tmp_path / "given.csv", frame_list=FRAMES)
    assert [row[0] for row in read_rows(path)[1:4]] == [f"video9/0000{k}.jpg" for k in (1, 2, 3)]
    # Without a frame list: tracks in order of first appearance, frames ascending.
    first = table["track"].unique(maintain_order=True).to_list()
    path = write_submission("expr", table, tmp_path / "appearance.csv")
    tracks = [row[0].split("/")[0] for row in read_rows(path)[1:]]
    assert list(dict.fromkeys(tracks)) == first


def test_floats_are_clipped_and_formatted(tmp_path):
    va = pl.DataFrame(
        {"track": ["t"] * 3, "frame": [0, 1, 2], "va_pred": [[1.7, -3.0], [-1e-9, 0.1234567], [0.5, -1]]}
    )
    path = write_submission("va", va, tmp_path / "va.csv", frame_list={"t": 3})
    assert path.read_text().splitlines()[1:] == [
        "t/00001.jpg,1.000000,-1.000000",
        "t/00002.jpg,0.000000,0.123457",
        "t/00003.jpg,0.500000,-1.000000",
    ]
    emi = pl.DataFrame({"track": ["v"], "emi_pred": [[1.2, -0.1, 0.5, 0.0, 1.0, 0.25]]})
    path = write_submission("emi", emi, tmp_path / "emi.csv", frame_list=["v"])
    assert path.read_text().splitlines()[1] == "v,1.000000,0.000000,0.500000,0.000000,1.000000,0.250000"


def test_array_columns_are_accepted(tmp_path):
    table = predictions("au")
    table = table.with_columns(pl.col("au_pred").cast(pl.Array(pl.Int8, len(AU_NAMES))))
    path = write_submission("au", table, tmp_path / "au.csv", frame_list=FRAMES)
    assert validate_submission("au", path, FRAMES) == []


# ------------------------------------------------------------------------------------------ writer errors


@pytest.mark.parametrize(
    "task, change, message",
    [
        ("au", lambda t: t.with_columns(pl.col("au_pred").list.eval(pl.element() * 2)), "0/1"),
        ("au", lambda t: t.with_columns(pl.col("au_pred").list.head(11)), "holds 11 values"),
        ("va", lambda t: t.with_columns(pl.col("va_pred").list.eval(pl.element() / 0 * 0)), "not finite"),
        ("expr", lambda t: t.with_columns(pl.col("expr_pred") + 8), "out of range"),
        ("expr", lambda t: t.drop("frame"), "missing \\['frame'\\]"),
        ("ce", lambda t: pl.concat([t, t.head(1)]), "appears twice"),
        ("emi", lambda t: pl.concat([t, t.head(1)]), "one row per video"),
        ("expr", lambda t: t.with_columns(pl.lit(-1).alias("frame")), "negative frame"),
        ("expr", lambda t: t.with_columns(pl.lit(None, pl.Int64).alias("expr_pred")), "null"),
    ],
)
def test_writer_rejects_bad_predictions(task, change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        write_submission(task, change(predictions(task)), tmp_path / "x.csv")
    assert not list(tmp_path.iterdir())


def test_writer_checks_against_the_frame_list(tmp_path):
    short = predictions("expr").filter(~((pl.col("track") == "video9") & (pl.col("frame") == 3)))
    with pytest.raises(SubmissionError, match="missing 1 of 8 .*video9/00004.jpg"):
        write_submission("expr", short, tmp_path / "expr.csv", frame_list=FRAMES)
    with pytest.raises(ValueError, match="tracks not in the frame list: 10-60-1280x720_right, video9"):
        write_submission("expr", predictions("expr"), tmp_path / "expr.csv", frame_list={"solo": 1})
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ validation


@pytest.fixture
def valid_lines(tmp_path) -> dict[str, list[str]]:
    """Each task's valid file, as lines."""
    out = {}
    for task in SUBMISSIONS:
        path = write_submission(
            task, predictions(task), tmp_path / f"{task}.csv", frame_list=frame_list(task)
        )
        out[task] = path.read_text().splitlines()
    return out


def problems_of(task: str, lines: list[str], tmp_path: Path) -> list[str]:
    path = tmp_path / f"edited_{task}.csv"
    path.write_text("\n".join(lines) + "\n")
    return validate_submission(task, path, frame_list(task))


def replaced(lines: list[str], number: int, text: str) -> list[str]:
    """Lines with file line `number` (1-based) replaced."""
    return lines[: number - 1] + [text] + lines[number:]


def test_wrong_header(valid_lines, tmp_path):
    lines = replaced(valid_lines["expr"], 1, "image_location,neutral,anger")
    assert problems_of("expr", lines, tmp_path) == [
        "line 1: header is 'image_location,neutral,anger', expected "
        "'image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other'"
    ]
    lines = replaced(valid_lines["emi"], 1, valid_lines["emi"][0].replace("Empathic Pain", "Empathic_Pain"))
    assert problems_of("emi", lines, tmp_path)[0].startswith("line 1: header is")


def test_wrong_column_count(valid_lines, tmp_path):
    lines = valid_lines["expr"]
    probabilities = ",".join(["0.125"] * 8)
    lines = replaced(lines, 3, lines[2].split(",")[0] + "," + probabilities)
    assert problems_of("expr", lines, tmp_path) == [
        "line 3: 9 fields, expected 2 (image_location + one class index 0..7)"
    ]
    au = valid_lines["au"]
    assert problems_of("au", replaced(au, 5, au[4].rsplit(",", 1)[0]), tmp_path) == [
        "line 5: 12 fields, expected 13 (image_location + 12 values 0/1)"
    ]


def test_location_not_in_frame_list(valid_lines, tmp_path):
    lines = valid_lines["ce"] + ["video9/00005.jpg,1"]
    assert problems_of("ce", lines, tmp_path) == [
        "line 10: location 'video9/00005.jpg' is not in the frame list"
    ]
    lines = replaced(valid_lines["emi"], 2, valid_lines["emi"][1].replace("00042", "42"))
    found = problems_of("emi", lines, tmp_path)
    assert found[0] == "line 2: location '42' is not in the frame list"
    assert found[1] == "missing 1 of 3 expected locations (first: 00042)"


def test_missing_locations_counted_with_the_first_few(valid_lines, tmp_path):
    lines = valid_lines["va"]
    found = problems_of("va", lines[:2] + lines[8:], tmp_path)  # drops file lines 3..8
    assert found == [
        "missing 6 of 8 expected locations (first: video9/00002.jpg, video9/00003.jpg, video9/00004.jpg, "
        "solo/00001.jpg, 10-60-1280x720_right/00001.jpg, ...)"
    ]
    assert problems_of("va", lines[:1], tmp_path)[0].startswith("missing 8 of 8")


def test_duplicate_location(valid_lines, tmp_path):
    lines = valid_lines["au"]
    found = problems_of("au", lines[:4] + [lines[2]] + lines[4:], tmp_path)
    assert found == ["line 5: duplicate location 'video9/00002.jpg' (first on line 3)"]


def test_out_of_order_rows(valid_lines, tmp_path):
    lines = valid_lines["expr"]
    swapped = lines[:2] + [lines[3], lines[2]] + lines[4:]  # file lines 3 and 4 swapped
    assert problems_of("expr", swapped, tmp_path) == [
        "line 4: 'video9/00002.jpg' is out of order: it comes after 'video9/00003.jpg' (line 3) but precedes "
        "it in the frame list"
    ]
    emi = valid_lines["emi"]
    found = problems_of("emi", [emi[0], emi[2], emi[1], emi[3]], tmp_path)
    assert found == [
        "line 3: '00042' is out of order: it comes after '00007' (line 2) but precedes it in the frame list"
    ]


@pytest.mark.parametrize(
    "task, value, message",
    [
        ("expr", "8", "line 4: class index 8 is out of range 0..7"),
        ("expr", "-1", "line 4: class index -1 is out of range 0..7"),
        ("expr", "0.85", "line 4: '0.85' is not a class index (an integer 0..7)"),
        ("ce", "7", "line 4: class index 7 is out of range 0..6"),
        ("au", "0,1,0,0,2,0,0,0,0,0,0,1", "line 4: AU7 = '2' is not 0 or 1"),
        ("au", "0,1,0,0,0.5,0,0,0,0,0,0,1", "line 4: AU7 = '0.5' is not 0 or 1"),
        ("va", "nan,0.1", "line 4: valence = 'nan' is not finite"),
        ("va", "0.1,inf", "line 4: arousal = 'inf' is not finite"),
        ("va", "1.5,0.1", "line 4: valence = 1.5 is outside [-1, 1]"),
        ("va", "0.1,high", "line 4: arousal = 'high' is not a number"),
        ("emi", "0.1,0.2,1.2,0.3,0.4,0.5", "line 4: Determination = 1.2 is outside [0, 1]"),
        ("emi", "0.1,0.2,0.3,-0.01,0.4,0.5", "line 4: Empathic Pain = -0.01 is outside [0, 1]"),
    ],
)
def test_bad_values(valid_lines, tmp_path, task, value, message):
    lines = valid_lines[task]
    location = lines[3].split(",")[0]
    assert problems_of(task, replaced(lines, 4, f"{location},{value}"), tmp_path) == [message]


def test_empty_line_and_empty_file(valid_lines, tmp_path):
    lines = valid_lines["ce"]
    found = problems_of("ce", lines[:3] + [""] + lines[3:], tmp_path)
    assert found == ["line 4: empty line"]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert validate_submission("ce", empty, FRAMES)[0].startswith("the file is empty")
    assert validate_submission("ce", tmp_path / "absent.csv", FRAMES)[0].startswith("cannot read")


def test_crlf_line_endings_are_tolerated(valid_lines, tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(("\r\n".join(valid_lines["va"]) + "\r\n").encode())
    assert validate_submission("va", path, FRAMES) == []


def test_problem_list_is_capped(tmp_path):
    fmt = SUBMISSIONS["expr"]
    path = tmp_path / "bad.csv"
    path.write_text(fmt.header_line + "\n" + "".join(f"t/{k:05d}.jpg,9\n" for k in range(1, 121)))
    found = validate_submission("expr", path, {"t": 120}, max_problems=50)
    assert len(found) == 51 and found[-1] == "... and 70 more problems"


def test_check_submission_raises_with_the_first_problems(valid_lines, tmp_path):
    path = tmp_path / "bad.csv"
    lines = valid_lines["expr"]
    path.write_text("\n".join(replaced(lines, 2, lines[1].split(",")[0] + ",12")) + "\n")
    with pytest.raises(SubmissionError, match="line 2: class index 12 is out of range 0..7"):
        check_submission("expr", path, FRAMES)


# ------------------------------------------------------------------------------------------ CLI


def test_cli(valid_lines, tmp_path, capsys):
    frames = tmp_path / "frames.txt"
    frames.write_text("\n".join(expected_locations(SUBMISSIONS["au"], FRAMES)) + "\n\n")
    good = tmp_path / "au.csv"
    assert main(["au", str(good), str(frames)]) == 0
    assert capsys.readouterr().out == "ok: 8 rows\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(valid_lines["au"][:-1]) + "\n")
    assert main(["au", str(bad), str(frames)]) == 1
    out = capsys.readouterr().out
    assert "missing 1 of 8 expected locations (first: 10-60-1280x720_right/00003.jpg)" in out

    videos = tmp_path / "videos.txt"
    videos.write_text("\n".join(VIDEOS) + "\n")
    assert main(["emi", str(tmp_path / "emi.csv"), str(videos)]) == 0


def test_cli_as_module(valid_lines, tmp_path):
    """The documented entry point, once (a fresh interpreter imports torch via `pipeline`: ~5-10 s here)."""
    frames = tmp_path / "frames.txt"
    frames.write_text("\n".join(expected_locations(SUBMISSIONS["ce"], {**FRAMES, "extra": 1})) + "\n")
    command = [
        sys.executable,
        "-m",
        "pipeline.submission.validate",
        "ce",
        str(tmp_path / "ce.csv"),
        str(frames),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "missing 1 of 9 expected locations (first: extra/00001.jpg)" in done.stdout
