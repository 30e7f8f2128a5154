"""A tiny-config run of every stage, in DAG order, from demo corpus to cv.json (the real code paths:
real detector, MAE, fine-tuning, Prefect fan-out over videos, shards and folds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from stages import demo, evaluate, faces, features, finetune, folds, frames, pretrain, smooth, train

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "demo": {"n_identities": 4, "videos_per_identity": 1, "two_person_videos": 1, "frames_per_video": 48},
    "pretrain": {"epochs": 1, "batch_size": 32},
    "finetune": {"epochs": 1, "batch_size": 16, "frame_stride": 3},
    "folds": {"n_folds": 3},
    "train": {
        "epochs": 2,
        "window": 16,
        "stride": 8,
        "batch_size": 4,
        "model_kwargs": {
            "hidden": 32,
            "tcn_levels": 2,
            "kernel_size": 3,
            "transformer_layers": 1,
            "heads": 2,
            "dropout": 0.1,
        },
    },
}


@pytest.mark.slow
def test_every_stage_runs_on_a_tiny_demo(tmp_path: Path, prefect_harness, monkeypatch):
    monkeypatch.setenv("AFFECTFLOW_WORKERS", "2")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, overrides in TINY.items():
        params[section].update(overrides)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    p = ["--params", str(params_file)]
    root, data, models = tmp_path / "demo", tmp_path / "data", tmp_path / "models"

    demo.main(["--out", str(root), *p])
    frames.main(["--root", str(root), "--out", str(data / "frames")])
    tracks = pl.read_parquet(data / "frames" / "tracks.parquet")
    assert tracks.height == 6 and set(tracks["split"]) == {"Train_Set", "Validation_Set"}
    for row in tracks.iter_rows(named=True):
        labels = pl.read_parquet(data / "frames" / "labels" / f"{row['track']}.parquet")
        assert labels.height == row["n_frames"]

    faces.main(["--root", str(root), "--frames", str(data / "frames"), "--out", str(data / "faces"), *p])
    summary = pl.read_parquet(data / "faces" / "summary.parquet")
    assert summary["faces"].sum() > 0.5 * summary["frames"].sum()

    pretrain.main(
        [
            "--faces",
            str(data / "faces"),
            "--frames",
            str(data / "frames"),
            "--out",
            str(models / "pretrain"),
            *p,
        ]
    )
    assert (models / "pretrain" / "reconstruction.png").stat().st_size > 0
    finetune.main(
        [
            "--faces",
            str(data / "faces"),
            "--frames",
            str(data / "frames"),
            "--pretrain",
            str(models / "pretrain"),
            "--out",
            str(models / "finetune"),
            *p,
        ]
    )
    features.main(
        [
            "--faces",
            str(data / "faces"),
            "--frames",
            str(data / "frames"),
            "--encoder",
            str(models / "finetune"),
            "--out",
            str(data / "features"),
            *p,
        ]
    )
    table = pl.read_parquet(data / "features" / f"{tracks['track'][0]}.parquet")
    assert table.height == tracks["n_frames"][0] * len(params["features"]["views"])
    assert table.filter(pl.col("has_face"))["embedding"].null_count() == 0

    folds.main(["--frames", str(data / "frames"), "--out", str(data / "splits"), *p])
    train.main(
        [
            "--features",
            str(data / "features"),
            "--frames",
            str(data / "frames"),
            "--splits",
            str(data / "splits"),
            "--out",
            str(models / "temporal"),
            *p,
        ]
    )
    smooth.main(["--models", str(models / "temporal"), "--out", str(data / "predictions"), *p])
    raw = pl.read_parquet(models / "temporal" / "fold_0" / "predictions.parquet")
    smoothed = pl.read_parquet(data / "predictions" / "fold_0.parquet")
    assert raw.height == smoothed.height and set(raw.columns) == set(smoothed.columns)
    probabilities = smoothed.select([f"expr_{i}" for i in range(8)]).to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)

    evaluate.main(
        [
            "--models",
            str(models / "temporal"),
            "--smoothed",
            str(data / "predictions"),
            "--frames",
            str(data / "frames"),
            "--metrics",
            str(tmp_path / "metrics"),
            "--plots",
            str(tmp_path / "plots"),
            *p,
        ]
    )
    cv = json.loads((tmp_path / "metrics" / "cv.json").read_text())
    for task, key in (("expr", "f1"), ("au", "f1"), ("va", "ccc")):
        for name in (key, f"{key}_std", "baseline"):
            assert isinstance(cv[task][name], float) and math.isfinite(cv[task][name]), (task, name)
        assert -1.0 <= cv[task][key] <= 1.0
    assert len(list((tmp_path / "metrics" / "folds").glob("fold_*.json"))) == 3
    for plot in ("folds.csv", "confusion.csv", "va_timeline.csv", "confusion.png", "va_timeline.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 0
