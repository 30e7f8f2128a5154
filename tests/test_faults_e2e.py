"""A damaged real-world-style root runs `every stage` to the end: a faceless track, no VA labels at all,
upper-case extensions and a data root whose path has a space. Each fault is a flagged repair a person can
see (face summary, predictions' `source`, notes in the metrics and stand-in plots), never a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
import yaml

from pipeline import artifacts
from pipeline.datasets.affwild2 import find_tracks, find_video
from pipeline.datasets.video import iter_frames, probe
from stages import demo, evaluate, faces, features, finetune, folds, frames, pretrain, smooth, train

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "demo": {
        "n_identities": 4,
        "videos_per_identity": 1,
        "two_person_videos": 0,
        "frames_per_video": 40,
        "task_drop_share": 0.0,
        "compound_videos": 0,  # Aff-Wild2 faults only (the other layouts have reader tests of their own)
        "mimicry_videos": 0,
    },
    "pretrain": {"epochs": 1, "batch_size": 32},
    "folds": {"runs": ["fold_0", "fold_1", "fold_2", "official"]},
    "finetune": {"epochs": 1, "batch_size": 16, "frame_stride": 4},
    "train": {
        "views": ["eye_mouth"],  # the encoder's features only: no geometry, audio or text stage here
        "modalities": [],
        "epochs": 1,
        "window": 16,
        "stride": 8,
        "batch_size": 4,
        "seeds": [0],
        "model_kwargs": {
            "hidden": 16,
            "tcn_levels": 1,
            "kernel_size": 3,
            "transformer_layers": 0,
            "heads": 2,
        },
    },
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_faceless_copy(video: Path) -> int:
    """Replace a video by one with the same frame count, size and rate that never shows a face."""
    info = probe(video)
    n_frames = sum(1 for _ in iter_frames(video))
    codec = "MJPG" if video.suffix.lower() == ".avi" else "mp4v"
    tmp = video.with_name("tmp" + video.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), info.fps, (info.width, info.height))
    for i in range(n_frames):  # a slowly moving grey gradient: texture, but nothing like a face
        ramp = (np.arange(info.width)[None, :] + 3 * i) % 256
        writer.write(
            np.repeat(np.broadcast_to(ramp, (info.height, info.width))[..., None], 3, 2).astype(np.uint8)
        )
    writer.release()
    tmp.replace(video)
    return n_frames


@pytest.mark.slow
def test_a_damaged_root_runs_to_the_end_with_every_repair_flagged(
    tmp_path: Path, prefect_harness, monkeypatch, capsys
):
    monkeypatch.setenv("AFFECTFLOW_WORKERS", "2")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, overrides in TINY.items():
        params[section].update(overrides)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    p = ["--params", str(params_file)]
    root = tmp_path / "my data" / "demo"  # a space in the path
    demo.main(["--out", str(root), *p])

    tracks = find_tracks(root)
    ghost = next(t for t in tracks if t.split == "Train_Set")  # its video will never show a face
    write_faceless_copy(find_video(root, ghost.video))
    shutil.rmtree(root / "VA_Estimation_Challenge")  # a root with EXPR and AU labels only
    other = next(t for t in tracks if t.name != ghost.name)
    video = find_video(root, other.video)
    video.rename(video.with_suffix(video.suffix.upper()))  # .MP4 / .AVI
    label = other.label_files["expr"]
    label.rename(label.with_suffix(".TXT"))

    data, models = tmp_path / "data", tmp_path / "models"
    frames_dir, faces_dir, splits = data / "frames", data / "faces", data / "splits"
    frames.main(["--root", str(root), "--out", str(frames_dir), *p])
    first = snapshot(frames_dir)
    capsys.readouterr()
    frames.main(["--root", str(root), "--out", str(frames_dir), *p])  # a rerun decodes nothing
    assert f"({len(tracks)} indexes reused)" in capsys.readouterr().out
    assert snapshot(frames_dir) == first
    table = pl.read_parquet(artifacts.tracks_table(frames_dir))
    assert set(table["track"]) == {t.name for t in tracks}
    assert "expr" in table.filter(pl.col("track") == other.name)["tasks"][0]  # the .TXT file was read
    assert not any("va" in value.split(",") for value in table["tasks"])

    faces.main(["--root", str(root), "--frames", str(frames_dir), "--out", str(faces_dir), *p])
    summary = pl.read_parquet(artifacts.faces_summary(faces_dir))
    assert summary.filter(pl.col("track") == ghost.name)["status"][0] == "faceless"

    pretrain.main(
        ["--faces", str(faces_dir), "--frames", str(frames_dir), "--out", str(models / "pretrain"), *p]
    )
    folds.main(["--frames", str(frames_dir), "--out", str(splits), *p])
    for run in TINY["folds"]["runs"]:
        common = ["--run", run, "--frames", str(frames_dir), "--splits", str(splits)]
        finetune.main([*common, "--faces", str(faces_dir), "--pretrain", str(models / "pretrain"),
                       "--out", str(models / "finetune" / run), *p])  # fmt: skip
        features.main([*common, "--faces", str(faces_dir), "--encoder", str(models / "finetune" / run),
                       "--out", str(data / "features" / run), *p])  # fmt: skip
        train.main([*common, "--features", str(data / "features" / run),
                    "--out", str(models / "temporal" / run), *p])  # fmt: skip
    # A rerun of features extracts only what is missing and removes what a fresh run would not write.
    fold_0 = data / "features" / "fold_0"
    before = snapshot(fold_0)
    victim = sorted(fold_0.glob("*.parquet"))[0]
    victim.unlink()
    (fold_0 / ".stray.parquet.tmp").write_text("left by a killed run")
    capsys.readouterr()
    encoder = models / "finetune" / "fold_0"
    features.main(["--run", "fold_0", "--frames", str(frames_dir), "--splits", str(splits), "--faces",
                   str(faces_dir), "--encoder", str(encoder), "--out", str(fold_0), *p])  # fmt: skip
    assert f"{len(before) - 1} tracks reused, 1 extracted" in capsys.readouterr().out
    assert snapshot(fold_0) == before
    smooth.main(
        ["--models", str(models / "temporal"), "--frames", str(frames_dir), "--out", str(data / "pred"), *p]
    )
    metrics, plots = tmp_path / "metrics", tmp_path / "plots"
    evaluate.main(["--models", str(models / "temporal"), "--smoothed", str(data / "pred"), "--frames",
                   str(frames_dir), "--splits", str(splits), "--metrics", str(metrics), "--plots", str(plots),
                   "--decisions", str(models / "decisions"), *p])  # fmt: skip

    # The faceless track is scored where it is a test track, on every frame, with the training prior.
    predictions = pl.concat(
        [
            pl.read_parquet(artifacts.raw_predictions(models / "temporal" / run))
            for run in TINY["folds"]["runs"]
        ],
        how="diagonal",
    )
    scored = predictions.filter(pl.col("track") == ghost.name)
    assert scored.height > 0 and set(scored["source"]) == {"prior"}
    assert "va_0" not in predictions.columns
    cv = json.loads((metrics / "cv.json").read_text())
    assert {"expr", "au"} <= set(cv) and "va" not in cv
    absent = "no labels under data.root: not trained or scored"
    assert cv["absent_tasks"] == dict.fromkeys(("ce", "emi", "va"), absent)  # no C-EXPR-DB / mimicry root
    assert cv["expr"]["folds"] == 3
    assert (
        pl.read_csv(plots / "va_timeline.csv").height == 0 and (plots / "va_timeline.png").stat().st_size > 0
    )
    assert pl.read_csv(plots / "confusion.csv").height > 0
