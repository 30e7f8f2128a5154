"""`affectflow predict` on real clips with a small bundle: one row per decoded frame and person in the
documented schema, a clear result for a video without faces, a folder with broken files, very short and
vertical videos, a variable-frame-rate clip, and the command's exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.datasets.video import iter_frames, read_timeline
from pipeline.predict.bundle import load_bundle
from pipeline.predict.run import RUN_FILE, predict_videos
from pipeline.predict.table import REJECTED_REASONS, check_prediction_table, table_schema
from pipeline.predict.video import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor(load_bundle(tiny_bundle))


def test_a_clip_gets_one_row_per_decoded_frame_in_the_documented_schema(predictor, fixture_videos, tmp_path):
    clip = fixture_videos / "single_face.mp4"
    result = predict_videos([clip], predictor, tmp_path)
    assert result.exit_status == 0 and result.failed == {}
    folder = tmp_path / "single_face"
    table = pl.read_parquet(folder / "predictions.parquet")
    check_prediction_table(table, predictor.bundle.tasks, "test")
    n_frames = read_timeline(clip).n_frames
    for _, rows in table.group_by("face_id"):
        assert rows["frame"].to_list() == list(range(n_frames))
    main = table.filter(pl.col("face_id") == table["face_id"].mode()[0])
    assert main["face_found"].mean() > 0.8  # the clip shows one face throughout
    found = main.filter(pl.col("face_found"))
    assert (
        found["FaceRectWidth"].min() > 20
        and found.select("x_0", "Yaw", "valence").null_count().sum_horizontal()[0] == 0
    )
    probabilities = found.select([c for c in table.columns if c in ("neutral", "anger", "other")]).to_numpy()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert set(found["expression"]) <= set(predictor.bundle.tasks[0].class_names)
    assert set(main["AU12_c"].unique()) <= {0, 1} and main["valence"].abs().max() <= 1.0
    assert (
        main["face_rejected"].to_list()
        == main["face_reason"].is_in(list(REJECTED_REASONS)).fill_null(False).to_list()
    )
    # The CSV holds the same table (what a spreadsheet user opens).
    csv = pl.read_csv(folder / "predictions.csv", schema=table_schema(predictor.bundle.tasks))
    assert csv.equals(table)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["frames"] == n_frames and summary["source"] == "single_face.mp4"
    assert summary["bundle"]["ensemble"] == "1 runs x 1 seeds"


def test_a_video_without_faces_says_so_on_every_frame(predictor, fixture_videos, tmp_path):
    result = predict_videos([fixture_videos / "no_face.mp4"], predictor, tmp_path)
    assert result.exit_status == 0
    table = pl.read_parquet(tmp_path / "no_face" / "predictions.parquet")
    assert table.height == read_timeline(fixture_videos / "no_face.mp4").n_frames
    assert table["face_id"].null_count() == table.height and not table["face_found"].any()
    assert set(table["outputs_from"]) == {"none"} and table["valence"].null_count() == table.height
    notes = json.loads((tmp_path / "no_face" / "summary.json").read_text())["notes"]
    assert any(note.startswith("no face found in") for note in notes)


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 25.0, fourcc: str = "mp4v") -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def test_a_folder_with_broken_files_reports_each_and_keeps_the_rest(predictor, fixture_videos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    source = fixture_videos / "single_face.mp4"
    shutil.copyfile(source, folder / "good.mp4")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.avi").write_text("not a video\n")
    (folder / "notes.txt").write_text("ignored: not a video suffix\n")
    frames = [rgb for _, rgb in iter_frames(source)]
    # Very short and vertical: 3 frames, cut 9:16 around the middle of a 640x360 clip.
    write_clip(folder / "short_vertical.mp4", [np.ascontiguousarray(f[:, 220:420]) for f in frames[:3]])
    # Truncated: the first 60% of an MJPG AVI; what decodes is predicted, the rest is not on the timeline.
    write_clip(folder / "whole.avi", frames[:30], fourcc="MJPG")
    data = (folder / "whole.avi").read_bytes()
    (folder / "truncated.avi").write_bytes(data[: int(0.6 * len(data))])
    (folder / "whole.avi").unlink()
    out = tmp_path / "out"
    status = cli(["predict", str(folder), "--bundle", str(predictor.bundle.root), "--out", str(out)])
    assert status == 1  # some videos failed, the others were written
    run = json.loads((out / RUN_FILE).read_text())
    assert sorted(Path(p).name for p in run["failed"]) == ["empty.mp4", "text.avi"]
    assert all(Path(p).name in message or "cannot" in message for p, message in run["failed"].items())
    assert sorted(run["written"].values()) == ["good", "short_vertical", "truncated"]
    assert sorted(p.name for p in out.iterdir()) == ["good", RUN_FILE, "short_vertical", "truncated"]
    truncated = pl.read_parquet(out / "truncated" / "predictions.parquet")
    assert 5 < truncated["frame"].n_unique() < 30  # the part that decodes, kept
    short = pl.read_parquet(out / "short_vertical" / "predictions.parquet")
    assert short["frame"].unique().to_list() == [0, 1, 2]


def test_variable_frame_rate_clip_keeps_every_timeline_frame(predictor, fixture_videos, tmp_path):
    clip = fixture_videos / "face_noface.mov"  # 30 and 24 fps steps mixed under a 26.4 fps header
    predict_videos([clip], predictor, tmp_path, max_frames=None)
    table = pl.read_parquet(tmp_path / "face_noface" / "predictions.parquet")
    n_frames = read_timeline(clip).n_frames
    for _, rows in table.group_by("face_id"):
        assert rows["frame"].to_list() == list(range(n_frames))
    assert table["face_found"].any() and not table["face_found"].all()


def test_the_command_fails_clearly_without_videos_or_bundle(tmp_path, tiny_bundle, capsys):
    assert cli(["predict", str(tmp_path / "missing.mp4"), "--bundle", str(tiny_bundle)]) == 2
    assert "missing.mp4: no such file or folder" in capsys.readouterr().err
    assert cli(["predict", str(tmp_path), "--bundle", str(tiny_bundle)]) == 2
    assert "no video files" in capsys.readouterr().err
    video = tmp_path / "clip.mp4"
    write_clip(video, [np.zeros((64, 64, 3), np.uint8)] * 2)
    assert cli(["predict", str(video), "--bundle", str(tmp_path / "nowhere")]) == 2
    assert "not a bundle" in capsys.readouterr().err
