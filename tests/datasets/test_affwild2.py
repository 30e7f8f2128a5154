"""Aff-Wild2 loader on tiny fake dataset roots built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.datasets import affwild2
from pipeline.datasets.affwild2 import (
    LabelCountError,
    Track,
    align_labels,
    find_tracks,
    find_video,
    labels_table,
    read_label_file,
)
from pipeline.tasks.definitions import AU_NAMES, get_task

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU_HEADER = ",".join(AU_NAMES)
VA_HEADER = "valence,arousal"
DIRS = {
    "expr": "EXPR_Classification_Challenge",
    "expr6": "EXPR_Recognition_Challenge",
    "au": "AU_Detection_Challenge",
    "va": "VA_Estimation_Challenge",
}
HEADERS = {"expr": EXPR_HEADER, "expr6": EXPR_HEADER, "au": AU_HEADER, "va": VA_HEADER}


def write_labels(
    root: Path, task: str, split: str, track: str, rows: list[str], header: str | None = None
) -> Path:
    """Write `<root>/<challenge dir>/<split>/<track>.txt` with a header line and the given rows."""
    path = root / DIRS[task] / split / f"{track}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADERS[task] if header is None else header, *rows]) + "\n")
    return path


def au_row(*ones: int, invalid: bool = False) -> str:
    values = ["1" if i in ones else "0" for i in range(12)]
    if invalid:
        values[5] = "-1"
    return ",".join(values)


# ---------------------------------------------------------------- read_label_file


def test_read_expr(tmp_path: Path) -> None:
    path = write_labels(tmp_path, "expr", "Train_Set", "v1", ["0", "7", "-1", "3"])
    values = read_label_file(path, get_task("expr"))
    assert values.dtype == np.int64
    np.testing.assert_array_equal(values, [0, 7, -1, 3])


def test_read_au_invalid_entry_invalidates_row(tmp_path: Path) -> None:
    path = write_labels(tmp_path, "au", "Train_Set", "v1", [au_row(0, 11), au_row(2, invalid=True), au_row()])
    values = read_label_file(path, get_task("au"))
    assert values.dtype == np.int64 and values.shape == (3, 12)
    assert values[0, 0] == 1 and values[0, 11] == 1 and values[0, 1:11].sum() == 0
    np.testing.assert_array_equal(values[1], np.full(12, -1))
    np.testing.assert_array_equal(values[2], np.zeros(12))


def test_read_va_invalid_entry_invalidates_row(tmp_path: Path) -> None:
    path = write_labels(tmp_path, "va", "Train_Set", "v1", ["0.25,-0.5", "-5,0.3", "-5.0,-5.0", "1,-1"])
    values = read_label_file(path, get_task("va"))
    assert values.dtype == np.float32 and values.shape == (4, 2)
    np.testing.assert_allclose(values, [[0.25, -0.5], [-5, -5], [-5, -5], [1, -1]])


def test_read_tolerates_whitespace_crlf_and_trailing_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("valence , arousal  \r\n 0.1, 0.2 \r\n0.3,0.4\r\n\r\n  \n")
    values = read_label_file(path, get_task("va"))
    np.testing.assert_allclose(values, [[0.1, 0.2], [0.3, 0.4]], rtol=1e-6)


def test_read_header_only_gives_no_rows(tmp_path: Path) -> None:
    path = write_labels(tmp_path, "au", "Train_Set", "v1", [])
    assert read_label_file(path, get_task("au")).shape == (0, 12)


@pytest.mark.parametrize(
    ("task", "header"),
    [
        ("expr", "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"),  # a class missing
        ("expr", "Anger,Neutral,Disgust,Fear,Happiness,Sadness,Surprise,Other"),  # wrong order
        ("va", "arousal,valence"),
        ("va", "valence,arousal,"),  # trailing comma is not whitespace
        ("au", AU_HEADER.replace("AU26", "AU27")),
    ],
)
def test_header_mismatch_raises(tmp_path: Path, task: str, header: str) -> None:
    path = write_labels(tmp_path, task, "Train_Set", "v1", [], header=header)
    with pytest.raises(ValueError, match=r"v1\.txt:1: header") as error:
        read_label_file(path, get_task(task))
    assert HEADERS[task] in str(error.value)  # says what was expected


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt:1"):
        read_label_file(path, get_task("expr"))


@pytest.mark.parametrize(
    ("task", "rows", "bad_line", "bad_text"),
    [
        ("expr", ["0", "1", "8"], 4, "8"),  # out of range
        ("expr", ["0", "x"], 3, "x"),
        ("expr", ["0", "1.5"], 3, "1.5"),
        ("expr", ["0", "1,2"], 3, "1,2"),
        ("expr", ["0", "", "1"], 3, ""),  # a blank line in the middle shifts every later frame
        ("au", [au_row(), "0,1"], 3, "0,1"),  # too few values
        ("au", [au_row().replace("0", "2", 1)], 2, "2,0"),
        ("va", ["0.1,0.2", "1.5,0"], 3, "1.5,0"),  # outside [-1, 1]
        ("va", ["nan,0.2"], 2, "nan,0.2"),
        ("va", ["0.1"], 2, "0.1"),
    ],
)
def test_malformed_line_names_file_line_and_text(
    tmp_path: Path, task: str, rows: list[str], bad_line: int, bad_text: str
) -> None:
    path = write_labels(tmp_path, task, "Train_Set", "track7", rows)
    with pytest.raises(ValueError) as error:
        read_label_file(path, get_task(task))
    message = str(error.value)
    assert f"track7.txt:{bad_line}:" in message
    assert repr(bad_text)[1:-1] in message
    assert "expected" in message


# ---------------------------------------------------------------- align_labels


def test_align_exact() -> None:
    aligned, report = align_labels(np.array([0, 1, 2]), 3, get_task("expr"))
    np.testing.assert_array_equal(aligned, [0, 1, 2])
    assert (report.n_labels, report.n_frames, report.dropped, report.padded) == (3, 3, 0, 0)
    assert report.exact
    assert "aligned exactly" in report.message("v1")


def test_align_drops_extra_label_rows_at_the_end() -> None:
    values = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=np.float32)
    aligned, report = align_labels(values, 2, get_task("va"))
    np.testing.assert_array_equal(aligned, values[:2])  # line k+1 <-> decoded frame k-1: drop the tail
    assert aligned.dtype == np.float32
    assert report.dropped == 1 and report.padded == 0 and not report.exact
    message = report.message("vid_left")
    assert "vid_left" in message and "dropped" in message and "1" in message


def test_align_pads_missing_rows_with_invalid_marker() -> None:
    values = np.ones((2, 12), dtype=np.int64)
    aligned, report = align_labels(values, 5, get_task("au"))
    assert aligned.shape == (5, 12) and aligned.dtype == np.int64
    np.testing.assert_array_equal(aligned[:2], 1)
    np.testing.assert_array_equal(aligned[2:], -1)
    assert report.padded == 3 and report.dropped == 0
    assert "padded" in report.message("v")


def test_align_rejects_negative_frame_count() -> None:
    with pytest.raises(ValueError):
        align_labels(np.zeros(3, dtype=np.int64), -1, get_task("expr"))


# ---------------------------------------------------------------- find_tracks


def test_find_tracks_basic_layout(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "10-60-1280x720_right", ["0"])
    write_labels(tmp_path, "expr", "Train_Set", "10-60-1280x720_left", ["1"])
    write_labels(tmp_path, "au", "Train_Set", "10-60-1280x720_left", [au_row()])
    write_labels(tmp_path, "va", "Validation_Set", "video2", ["0.1,0.2"])
    write_labels(tmp_path, "au", "Validation_Set", "video2", [au_row()])
    (tmp_path / DIRS["au"] / "Train_Set" / "notes.csv").write_text("ignored\n")

    tracks = find_tracks(tmp_path)
    assert [t.name for t in tracks] == ["10-60-1280x720_left", "10-60-1280x720_right", "video2"]
    left, right, video2 = tracks
    assert left.video == right.video == "10-60-1280x720"
    assert left.subject == right.subject == "10-60-1280x720"  # one group: both people of one video
    assert left.split == right.split == "Train_Set"
    assert set(left.label_files) == {"expr", "au"} and left.tasks == ("expr", "au")
    assert set(right.label_files) == {"expr"}
    assert video2.split == "Validation_Set" and video2.video == "video2" and video2.subject == "video2"
    assert left.label_files["au"] == tmp_path / DIRS["au"] / "Train_Set" / "10-60-1280x720_left.txt"


def test_video_name_stripping() -> None:
    assert affwild2.video_name("a_left") == "a"
    assert affwild2.video_name("a_right") == "a"
    assert affwild2.video_name("a_leftover") == "a_leftover"
    assert affwild2.video_name("122-60-1920x1080-5") == "122-60-1920x1080-5"


def test_missing_task_is_absent(tmp_path: Path) -> None:
    write_labels(tmp_path, "va", "Train_Set", "v1", ["0.1,0.2"])
    (tracks,) = find_tracks(tmp_path)
    assert set(tracks.label_files) == {"va"}


def test_no_annotation_folder_lists_names(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        find_tracks(tmp_path)
    for name in DIRS.values():
        assert name in str(error.value)


def test_both_expr_folder_names_are_merged(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "a", ["0", "1"])
    write_labels(tmp_path, "expr6", "Train_Set", "a", ["0", "1"])  # identical copy: fine
    write_labels(tmp_path, "expr6", "Validation_Set", "b", ["2"])  # only in the ABAW6 folder
    tracks = {t.name: t for t in find_tracks(tmp_path)}
    assert set(tracks) == {"a", "b"}
    assert tracks["a"].label_files["expr"].parent.parent.name == DIRS["expr"]  # preferred folder
    assert tracks["b"].label_files["expr"].parent.parent.name == DIRS["expr6"]
    assert tracks["b"].split == "Validation_Set"


def test_expr_folders_disagreeing_raise(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "a", ["0", "1"])
    write_labels(tmp_path, "expr6", "Train_Set", "a", ["0", "2"])
    with pytest.raises(ValueError, match="two different expr label files"):
        find_tracks(tmp_path)


def test_track_in_two_splits_of_one_task_raises(tmp_path: Path) -> None:
    write_labels(tmp_path, "au", "Train_Set", "a", [au_row()])
    write_labels(tmp_path, "au", "Validation_Set", "a", [au_row()])
    with pytest.raises(ValueError, match="Train_Set.*Validation_Set"):
        find_tracks(tmp_path)


def test_track_in_different_splits_across_tasks_raises(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "a", ["0"])
    write_labels(tmp_path, "va", "Validation_Set", "a", ["0.1,0.1"])
    with pytest.raises(ValueError, match="one split for every task") as error:
        find_tracks(tmp_path)
    assert "'a'" in str(error.value)


# ---------------------------------------------------------------- subjects.csv


def test_subjects_csv(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "v1_left", ["0"])
    write_labels(tmp_path, "expr", "Train_Set", "v1_right", ["0"])
    write_labels(tmp_path, "expr", "Train_Set", "v2", ["0"])
    (tmp_path / "subjects.csv").write_text("track,subject\nv1_left, alice\nv2,alice\n\n")
    subjects = {t.name: t.subject for t in find_tracks(tmp_path)}
    assert subjects == {"v1_left": "alice", "v1_right": "v1", "v2": "alice"}  # unlisted: video name


def test_subjects_csv_track_without_labels_names_line_and_closest_track(tmp_path: Path) -> None:
    """A misspelt track would silently fall back to its video name and put one person in two folds."""
    for track in ("video10_left", "video10_right", "video2"):
        write_labels(tmp_path, "expr", "Train_Set", track, ["0"])
    rows = ["video2,bob", "", "video10_right,carol", "", "", "vide10_left,carol"]
    (tmp_path / "subjects.csv").write_text("\n".join(["track,subject", *rows]) + "\n")
    with pytest.raises(ValueError) as error:
        find_tracks(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'subjects.csv'}:7: track 'vide10_left' has no label file under {tmp_path} "
        "(did you mean 'video10_left'?)"
    )
    (tmp_path / "subjects.csv").write_text("track,subject\nvideo2,bob\nzzz,carol\n")
    with pytest.raises(ValueError, match=r"subjects\.csv:3: track 'zzz' has no label file .*no track"):
        find_tracks(tmp_path)


def test_subjects_csv_name_is_exact(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "v1", ["0"])
    (tmp_path / "SUBJECTS.CSV").write_text("track,subject\nv1,alice\n")
    (track,) = find_tracks(tmp_path)
    assert track.subject == "v1" and not track.subject_known


def test_uppercase_label_extension_is_read(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "v1", ["0", "3"]).rename(
        tmp_path / DIRS["expr"] / "Train_Set" / "v1.TXT"
    )
    write_labels(tmp_path, "au", "Train_Set", "v1", [au_row()])
    (tmp_path / DIRS["au"] / "Train_Set" / "v1.csv").write_text("not labels\n")
    (track,) = find_tracks(tmp_path)
    assert track.label_files["expr"].name == "v1.TXT" and set(track.label_files) == {"expr", "au"}


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("name,subject\nv1,a\n", 1),
        ("", 1),
        ("track,subject\nv1,a\nv2\n", 3),
        ("track,subject\nv1,a,b\n", 2),
        ("track,subject\nv1,\n", 2),
        ("track,subject\nv1,a\nv1,b\n", 3),
    ],
)
def test_malformed_subjects_csv(tmp_path: Path, content: str, line: int) -> None:
    write_labels(tmp_path, "expr", "Train_Set", "v1", ["0"])
    (tmp_path / "subjects.csv").write_text(content)
    with pytest.raises(ValueError, match=rf"subjects\.csv:{line}:"):
        find_tracks(tmp_path)


# ---------------------------------------------------------------- find_video


@pytest.mark.parametrize(
    ("folder", "ext"),
    [("batch1", ".mp4"), ("new_vids", ".avi"), (".", ".mp4"), ("batch2", ".MP4"), ("videos", ".Avi")],
)
def test_find_video(tmp_path: Path, folder: str, ext: str) -> None:
    path = tmp_path / folder / f"v1{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"video")
    assert find_video(tmp_path, "v1") == path


def test_find_video_stem_is_exact_and_glob_characters_are_literal(tmp_path: Path) -> None:
    (tmp_path / "batch1").mkdir()
    (tmp_path / "batch1" / "V1.mp4").write_bytes(b"other")
    (tmp_path / "batch1" / "v[1].MP4").write_bytes(b"video")
    (tmp_path / "batch1" / "v1x.mp4").write_bytes(b"other")
    assert find_video(tmp_path, "v[1]") == tmp_path / "batch1" / "v[1].MP4"
    with pytest.raises(FileNotFoundError):
        find_video(tmp_path, "v1")


def test_find_video_missing_lists_searched_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        find_video(tmp_path, "v9")
    message = str(error.value)
    assert "v9" in message
    assert str(tmp_path / "batch3" / "v9.avi") in message and str(tmp_path / "new_vids" / "v9.mp4") in message


def test_find_video_two_different_files_raise(tmp_path: Path) -> None:
    for folder, content in [("batch2", b"one"), ("videos", b"two")]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "v1.mp4").write_bytes(content)
    with pytest.raises(ValueError, match="two different videos"):
        find_video(tmp_path, "v1")


def test_find_video_identical_copies_are_fine(tmp_path: Path) -> None:
    for folder in ("batch1", "videos"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "v1.mp4").write_bytes(b"same")
    assert find_video(tmp_path, "v1") == tmp_path / "batch1" / "v1.mp4"


# ---------------------------------------------------------------- labels_table


def test_labels_table_aligns_and_fills_missing_tasks(tmp_path: Path) -> None:
    # 4 decoded frames. EXPR has 5 rows (one too many), AU has 2 (short), VA is missing entirely.
    write_labels(tmp_path, "expr", "Train_Set", "v1_left", ["4", "-1", "2", "3", "6"])
    write_labels(tmp_path, "au", "Train_Set", "v1_left", [au_row(0), au_row(6, invalid=True)])
    (track,) = find_tracks(tmp_path)

    table, reports = labels_table(track, 4, Path("v1.avi"), tolerance=2, force=False)
    expected_columns = ["frame", "expr", *AU_NAMES, "valence", "arousal"]
    assert table.columns == expected_columns
    assert table.height == 4
    assert table.schema["frame"] == pl.Int32 and table.schema["expr"] == pl.Int8
    assert all(table.schema[name] == pl.Int8 for name in AU_NAMES)
    assert table.schema["valence"] == pl.Float32 and table.schema["arousal"] == pl.Float32

    assert table["frame"].to_list() == [0, 1, 2, 3]
    assert table["expr"].to_list() == [4, -1, 2, 3]  # file line k+1 -> frame k-1; the 5th row dropped
    assert table["AU1"].to_list() == [1, -1, -1, -1]  # row 2 invalid, rows 3-4 padded
    assert table["AU12"].to_list() == [0, -1, -1, -1]
    assert table["valence"].to_list() == [-5.0] * 4 and table["arousal"].to_list() == [-5.0] * 4

    by_task = {r.task: r for r in reports}
    assert set(by_task) == {"expr", "au"}
    assert by_task["expr"].dropped == 1 and by_task["expr"].n_labels == 5
    assert by_task["au"].padded == 2 and by_task["au"].n_frames == 4
    assert "v1_left" in by_task["expr"].message(track)


def test_labels_table_all_tasks(tmp_path: Path) -> None:
    write_labels(tmp_path, "expr", "Validation_Set", "v", ["1", "2"])
    write_labels(tmp_path, "au", "Validation_Set", "v", [au_row(11), au_row(0, 1)])
    write_labels(tmp_path, "va", "Validation_Set", "v", ["0.5,-0.25", "-5,-5"])
    (track,) = find_tracks(tmp_path)
    table, reports = labels_table(track, 2, Path("v.mp4"), tolerance=0, force=False)
    assert all(r.exact for r in reports) and len(reports) == 3
    assert table["expr"].to_list() == [1, 2]
    assert table["AU26"].to_list() == [1, 0] and table["AU2"].to_list() == [0, 1]
    assert table["valence"].to_list() == [0.5, -5.0] and table["arousal"].to_list() == [-0.25, -5.0]


def test_labels_table_for_track_without_files() -> None:
    track = Track(name="x", video="x", split="Train_Set", label_files={}, subject="x")
    table, reports = labels_table(track, 3, Path("x.mp4"), tolerance=0, force=False)
    assert reports == [] and table.height == 3
    assert table["expr"].to_list() == [-1, -1, -1]
    assert table["AU7"].to_list() == [-1, -1, -1]


# ---------------------------------------------------------------- label count vs timeline


@pytest.mark.parametrize(("n_labels", "ok"), [(10, True), (11, True), (9, True), (12, False), (8, False)])
def test_label_count_tolerance(tmp_path: Path, n_labels: int, ok: bool) -> None:
    label_file = write_labels(tmp_path, "expr", "Train_Set", "v1", ["1"] * n_labels)
    (track,) = find_tracks(tmp_path)
    video = tmp_path / "batch1" / "v1.mp4"
    if not ok:
        with pytest.raises(LabelCountError) as error:
            labels_table(track, 10, video, tolerance=1, force=False)
        message = str(error.value)
        assert str(label_file) in message and str(video) in message
        assert f"{n_labels} label rows" in message and "10 frames" in message
        assert "frames.force_label_alignment: true" in message and "pair the right file" in message
        return
    table, (report,) = labels_table(track, 10, video, tolerance=1, force=False)
    assert table["expr"].to_list() == [1] * min(n_labels, 10) + [-1] * max(0, 10 - n_labels)
    assert not report.forced and "WARNING" not in report.message(track)
    assert (report.label_file, report.video) == (label_file, video)


@pytest.mark.parametrize("n_labels", [60, 0])
def test_forced_label_alignment_is_a_warning(tmp_path: Path, n_labels: int) -> None:
    write_labels(tmp_path, "va", "Train_Set", "v1", ["0.5,0.5"] * n_labels)
    (track,) = find_tracks(tmp_path)
    table, (report,) = labels_table(track, 10, tmp_path / "v1.avi", tolerance=1, force=True)
    assert table.height == 10 and report.forced
    message = report.message(track)
    assert message.startswith("WARNING: v1 [va]") and "v1.txt" in message and "v1.avi" in message


def test_header_only_label_file_is_a_mismatch(tmp_path: Path) -> None:
    write_labels(tmp_path, "au", "Train_Set", "v1", [])
    (track,) = find_tracks(tmp_path)
    with pytest.raises(LabelCountError, match=r"no label rows \(header only\)"):
        labels_table(track, 1, tmp_path / "v1.avi", tolerance=1, force=False)  # even within the tolerance
