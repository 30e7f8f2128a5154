"""The faces stage's per-track summary: faceless / partial / ok status, and every flagged track printed."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline import artifacts
from pipeline.faces.table import FaceRow, FaceTableBuilder
from stages import faces

FRAMES = 10


def write_track(out_dir: Path, track: str, n_faces: int) -> None:
    """A face table of FRAMES frames whose first `n_faces` have a face (frame 8 rejected as blurred)."""
    builder = FaceTableBuilder()
    for frame in range(FRAMES):
        if frame < n_faces:
            builder.add(FaceRow(frame, None, person=0, origin="detected", score=0.9, box=(10, 10, 90, 90)))
        elif frame == 8:
            builder.add(FaceRow(frame, "blurred", person=0, origin="tracked", box=(10, 10, 90, 90)))
        else:
            builder.add(FaceRow(frame, "no_face"))
    table = builder.finish()
    path = artifacts.face_table(out_dir, track)
    path.parent.mkdir(parents=True)
    table.write_parquet(path)


@pytest.mark.parametrize(
    ("n_faces", "status"),
    [(0, "faceless"), (1, "partial"), (4, "partial"), (5, "ok"), (FRAMES, "ok")],
)
def test_track_status_threshold(n_faces: int, status: str) -> None:
    assert faces.PARTIAL_RATE == 0.5
    assert faces.track_status(n_faces, FRAMES) == status


def test_summary_flags_and_reports_each_track(tmp_path: Path, capsys) -> None:
    counts = {"vid_none": 0, "vid_few": 3, "vid_full": FRAMES}
    for track, n_faces in counts.items():
        write_track(tmp_path, track, n_faces)
    tracks = pl.DataFrame(
        {
            "track": list(counts),
            "video": list(counts),
            "video_path": [f"{t}.mp4" for t in counts],
            "n_frames": [FRAMES] * 3,
        }
    )

    summary = faces.summarize(tracks, tmp_path)
    assert summary.columns == list(faces.SUMMARY_SCHEMA)
    assert summary["status"].to_list() == ["faceless", "partial", "ok"]
    assert summary["faces"].to_list() == [0, 3, FRAMES]
    assert summary["rejected_blurred"].to_list() == [1, 1, 0]
    assert summary["filled"].to_list() == [0, FRAMES - 3, 0]
    assert summary["rate"].to_list() == pytest.approx([0.0, 0.3, 1.0])

    faces.report(summary)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"faces: 13 of {3 * FRAMES} frames have a usable face (43.3%): 13 detected")
    assert lines[1] == "faces rejected: 2 blurred"
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and "vid_none" in warnings[0]
    assert "kept out of training; its frames get the documented fallback prediction" in warnings[0]
    partial = [line for line in lines if "vid_few" in line]
    assert len(partial) == 1 and "30.0%" in partial[0] and not partial[0].startswith("WARNING")
    assert not any("vid_full" in line for line in lines)


def test_summary_rejects_a_table_that_disagrees_with_the_frames_stage(tmp_path: Path) -> None:
    write_track(tmp_path, "vid", 2)
    tracks = pl.DataFrame(
        {"track": ["vid"], "video": ["vid"], "video_path": ["vid.mp4"], "n_frames": [FRAMES + 1]}
    )
    with pytest.raises(ValueError, match="decoded 10 frames in faces but 11 in frames"):
        faces.summarize(tracks, tmp_path)


def test_rate_plot_for_dvc_plots(tmp_path: Path) -> None:
    counts = {"vid_none": 0, "vid_few": 3}
    for track, n_faces in counts.items():
        write_track(tmp_path, track, n_faces)
    tracks = pl.DataFrame(
        {
            "track": list(counts),
            "video": list(counts),
            "video_path": ["a.mp4", "b.mp4"],
            "n_frames": [FRAMES] * 2,
        }
    )
    faces.write_rate_plot(faces.summarize(tracks, tmp_path), tmp_path / "plots" / "faces_rate.csv")
    plot = pl.read_csv(tmp_path / "plots" / "faces_rate.csv")
    assert plot.columns == ["track", "detected", "tracked", "filled", "rejected", "rate"]
    assert plot["rate"].to_list() == [0.0, 0.3]
    assert plot["filled"].to_list() == [0.0, 0.7]
    assert plot["rejected"].to_list() == [0.1, 0.1]
