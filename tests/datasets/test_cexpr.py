"""C-EXPR-DB reader on tiny hand-written layouts in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import cexpr
from pipeline.tasks.definitions import COMPOUND_CLASSES

HEADER = ",".join(COMPOUND_CLASSES)


def write_labels(
    root: Path, video: str, rows: list[str], folder: str = "annotations", header: str = HEADER
) -> Path:
    path = root / folder / f"{video}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def touch(path: Path, content: bytes = b"video") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_find_tracks_and_read_labels(tmp_path: Path) -> None:
    first = write_labels(tmp_path, "01", ["-1", "0", "6", "3", "-1"])
    write_labels(tmp_path, "02", ["1", "1"])
    (tmp_path / "annotations" / ".01.txt").write_text("editor backup")  # ignored
    (tmp_path / "annotations" / "notes.md").write_text("not a label file")  # ignored
    (tmp_path / "subjects.csv").write_text("track,subject\n01,subject03\n02,subject05\n")

    tracks = cexpr.find_tracks(tmp_path)
    assert [t.name for t in tracks] == ["01", "02"]
    assert all(t.video == t.name and t.split == "Test_Set" for t in tracks)
    assert tracks[0].label_files == {"ce": first}
    assert [t.subject for t in tracks] == ["subject03", "subject05"]
    assert all(t.subject_known for t in tracks)

    labels = cexpr.read_labels(first)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [-1, 0, 6, 3, -1])


def test_singular_folder_upper_case_extension_and_no_subjects(tmp_path: Path) -> None:
    path = tmp_path / "annotation" / "07.TXT"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "\n2\n")
    (track,) = cexpr.find_tracks(tmp_path)
    assert track.name == "07" and track.label_files == {"ce": path}
    assert track.subject == "07" and not track.subject_known  # no subjects.csv: the video is the group


def test_both_annotation_folders(tmp_path: Path) -> None:
    write_labels(tmp_path, "01", ["1"], folder="annotations")
    write_labels(tmp_path, "01", ["1"], folder="annotation")  # the same file twice: fine
    (track,) = cexpr.find_tracks(tmp_path)
    assert track.label_files["ce"].parent.name == "annotations"
    write_labels(tmp_path, "01", ["2"], folder="annotation")
    with pytest.raises(ValueError, match="two different label files"):
        cexpr.find_tracks(tmp_path)


def test_missing_annotation_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotations.*annotation"):
        cexpr.find_tracks(tmp_path)


def test_subjects_naming_an_unknown_video(tmp_path: Path) -> None:
    write_labels(tmp_path, "01", ["1"])
    (tmp_path / "subjects.csv").write_text("track,subject\n01,a\n10,b\n")
    with pytest.raises(ValueError, match=r"subjects.csv:3: track '10'"):
        cexpr.find_tracks(tmp_path)


@pytest.mark.parametrize(
    ("rows", "line"),
    [
        (["0", "7"], 3),  # class index out of range
        (["0", "1", "x"], 4),  # not a number
        (["1,2"], 2),  # two values
        (["-2"], 2),  # negative but not the invalid marker
        (["0", "", "1"], 3),  # an empty line inside would shift every later frame
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, rows: list[str], line: int) -> None:
    path = write_labels(tmp_path, "01", rows)
    with pytest.raises(ValueError, match=rf"01.txt:{line}: .*class index 0\.\.6"):
        cexpr.read_labels(path)


def test_wrong_header(tmp_path: Path) -> None:
    path = write_labels(tmp_path, "01", ["1"], header=",".join(reversed(COMPOUND_CLASSES)))
    with pytest.raises(ValueError, match=r"01.txt:1: header .* does not match"):
        cexpr.read_labels(path)
    path = write_labels(
        tmp_path, "02", ["1"], header="Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    )
    with pytest.raises(ValueError, match=r"02.txt:1:"):
        cexpr.read_labels(path)


def test_find_video(tmp_path: Path) -> None:
    video = touch(tmp_path / "videos" / "01.mp4")
    assert cexpr.find_video(tmp_path, "01") == video
    loose = touch(tmp_path / "02.AVI")  # directly under the root, extension in upper case
    assert cexpr.find_video(tmp_path, "02") == loose
    touch(tmp_path / "videos" / "02.avi", b"another video")
    with pytest.raises(ValueError, match="two different videos"):
        cexpr.find_video(tmp_path, "02")
    touch(tmp_path / "videos" / "01.avi")  # identical bytes: a harmless copy
    assert cexpr.find_video(tmp_path, "01") in (video, tmp_path / "videos" / "01.avi")


def test_missing_video_lists_what_was_searched(tmp_path: Path) -> None:
    touch(tmp_path / "videos" / "010.mp4")  # similar name, not a match
    with pytest.raises(FileNotFoundError) as error:
        cexpr.find_video(tmp_path, "01")
    message = str(error.value)
    for candidate in ("videos/01.mp4", "videos/01.avi", f"{tmp_path / '01.mp4'}", f"{tmp_path / '01.avi'}"):
        assert candidate in message
