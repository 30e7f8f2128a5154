"""Hume-Vidmimic2 reader on tiny hand-written layouts in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import mimicry

HEADER = "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"


def write_split(root: Path, name: str, rows: list[str], header: str = HEADER) -> Path:
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def touch(path: Path, content: bytes = b"media") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_header_constant_matches_the_task() -> None:
    assert ",".join(mimicry.HEADER) == HEADER
    assert mimicry.TASK.columns == (
        "admiration",
        "amusement",
        "determination",
        "empathic_pain",
        "excitement",
        "joy",
    )
    assert mimicry.TASK.class_names == mimicry.HEADER[1:]


def test_find_tracks_and_read_intensities(tmp_path: Path) -> None:
    train = write_split(tmp_path, "train_split.csv", ["00001,0.1,0.2,0.3,0.4,0.5,0.6", "00003,0,0,0,0,0,1"])
    valid = write_split(tmp_path, "valid_split.csv", ["00002,1.0000,0.5,0.25,0.125,0.0625,0.0000"])
    (tmp_path / "subjects.csv").write_text(
        "track,subject\n00001,subject01\n00002,subject02\n00003,subject01\n"
    )

    tracks = mimicry.find_tracks(tmp_path)
    assert [t.name for t in tracks] == ["00001", "00002", "00003"]
    assert [t.split for t in tracks] == ["Train_Set", "Validation_Set", "Train_Set"]
    assert [t.label_files for t in tracks] == [{"emi": train}, {"emi": valid}, {"emi": train}]
    assert all(t.video == t.name and t.subject_known for t in tracks)
    assert [t.subject for t in tracks] == ["subject01", "subject02", "subject01"]

    values = mimicry.read_intensities(tmp_path)
    assert set(values) == {"00001", "00002", "00003"}
    assert all(v.dtype == np.float32 and v.shape == (6,) for v in values.values())
    np.testing.assert_allclose(values["00001"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], rtol=1e-6)
    np.testing.assert_allclose(values["00002"], [1, 0.5, 0.25, 0.125, 0.0625, 0])


def test_one_split_file_crlf_bom_blank_lines_and_no_subjects(tmp_path: Path) -> None:
    (tmp_path / "valid_split.csv").write_bytes(
        ("\ufeff" + HEADER + "\r\n 00009 , 0.1,0.1,0.1,0.1,0.1,0.1\r\n\r\n00010,1,1,1,1,1,1\r\n").encode()
    )
    tracks = mimicry.find_tracks(tmp_path)
    assert [(t.name, t.split, t.subject, t.subject_known) for t in tracks] == [
        ("00009", "Validation_Set", "00009", False),
        ("00010", "Validation_Set", "00010", False),
    ]


def test_no_split_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_split.csv.*valid_split.csv"):
        mimicry.read_intensities(tmp_path)


@pytest.mark.parametrize(
    "header",
    [
        "Filename,Admiration,Amusement,Determination,Empathic_Pain,Excitement,Joy",  # misspelt
        "Filename,Amusement,Admiration,Determination,Empathic Pain,Excitement,Joy",  # wrong order
        "Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy",  # no Filename
        "",  # empty file
    ],
)
def test_wrong_header(tmp_path: Path, header: str) -> None:
    path = tmp_path / "train_split.csv"
    path.write_text(header + ("\n00001,0,0,0,0,0,0\n" if header else ""))
    with pytest.raises(ValueError, match=rf"train_split.csv:1: expected the header '{HEADER}'"):
        mimicry.read_intensities(tmp_path)


@pytest.mark.parametrize(
    "row",
    [
        "00002,0.1,0.2,0.3,0.4,0.5,1.2",  # above 1
        "00002,-0.1,0.2,0.3,0.4,0.5,0.6",  # below 0
        "00002,0.1,0.2,0.3,0.4,0.5,nan",  # not finite
        "00002,0.1,0.2,0.3,0.4,0.5",  # 5 values
        "00002,0.1,0.2,0.3,0.4,0.5,0.6,0.7",  # 7 values
        "00002,0.1,0.2,x,0.4,0.5,0.6",  # not a number
        ",0.1,0.2,0.3,0.4,0.5,0.6",  # no name
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, row: str) -> None:
    write_split(tmp_path, "valid_split.csv", ["00001,0,0,0,0,0,0", "", row])
    with pytest.raises(ValueError, match=r"valid_split.csv:4: got .*6 comma-separated numbers in \[0, 1\]"):
        mimicry.read_intensities(tmp_path)


def test_duplicate_names(tmp_path: Path) -> None:
    write_split(tmp_path, "train_split.csv", ["00001,0,0,0,0,0,0", "00001,1,1,1,1,1,1"])
    with pytest.raises(
        ValueError, match=r"train_split.csv:3: video '00001' is listed twice .*train_split.csv:2"
    ):
        mimicry.read_intensities(tmp_path)
    write_split(tmp_path, "train_split.csv", ["00001,0,0,0,0,0,0"])
    write_split(tmp_path, "valid_split.csv", ["00002,0,0,0,0,0,0", "00001,0,0,0,0,0,0"])
    with pytest.raises(
        ValueError, match=r"valid_split.csv:3: video '00001' is listed twice .*train_split.csv:2"
    ):
        mimicry.find_tracks(tmp_path)


def test_subjects_naming_an_unlisted_video(tmp_path: Path) -> None:
    write_split(tmp_path, "train_split.csv", ["00001,0,0,0,0,0,0"])
    (tmp_path / "subjects.csv").write_text("track,subject\n00002,subject01\n")
    with pytest.raises(ValueError, match=r"subjects.csv:2: track '00002'.*did you mean '00001'"):
        mimicry.find_tracks(tmp_path)


def test_find_video_and_audio(tmp_path: Path) -> None:
    files = [
        touch(tmp_path / "raw" / "00001.WEBM"),
        touch(tmp_path / "raw" / "00002.mkv"),
        touch(tmp_path / "audio" / "00001.wav"),
        touch(tmp_path / "audio" / "00002.MP3"),
    ]
    assert mimicry.find_video(tmp_path, "00001") == files[0]
    assert mimicry.find_video(tmp_path, "00002") == files[1]
    assert mimicry.find_audio(tmp_path, "00001") == files[2]
    assert mimicry.find_audio(tmp_path, "00002") == files[3]
    touch(tmp_path / "raw" / "00001.mp4", b"another clip")
    with pytest.raises(ValueError, match="two different video files"):
        mimicry.find_video(tmp_path, "00001")


def test_missing_video_or_audio_lists_what_was_searched(tmp_path: Path) -> None:
    touch(tmp_path / "raw" / "000011.mp4")  # similar name, not a match
    with pytest.raises(FileNotFoundError) as error:
        mimicry.find_video(tmp_path, "00001")
    for ext in (".mp4", ".avi", ".webm", ".mkv"):
        assert f"raw/00001{ext}" in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"no audio for '00001'.*audio/00001.wav.*audio/00001.mp3"):
        mimicry.find_audio(tmp_path, "00001")
