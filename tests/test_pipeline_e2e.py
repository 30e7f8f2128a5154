"""A tiny-config run of every stage, in DAG order, from demo corpus to metrics and submission files (the
real code paths: real detector, MAE, per-run fine-tuning, Prefect fan-out over videos, geometry, audio and
text features, per-run sequence training over seeds, the five tracks and the fold-ensemble submission, the
exported bundle and `affectflow predict` on a raw video)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline import artifacts
from pipeline.evaluation.folds import groups_split_across
from pipeline.models.encoders import load_checkpoint
from pipeline.predict.run import predict_paths
from pipeline.submission.validate import validate_submission
from pipeline.tasks.definitions import TASKS
from stages import (
    audio,
    demo,
    evaluate,
    export,
    faces,
    features,
    finetune,
    folds,
    frames,
    geometry,
    pretrain,
    smooth,
    submit,
    text,
    train,
)

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "demo": {
        "n_identities": 4,
        "videos_per_identity": 1,
        "two_person_videos": 1,
        "frames_per_video": 48,
        "compound_videos": 4,  # one per person: every fold holds compound frames
        "compound_frames": 30,
        "mimicry_videos": 8,  # two per person: every fold scores Pearson r on at least two videos
        "mimicry_frames": 20,
    },
    "pretrain": {"epochs": 1, "batch_size": 32},
    "folds": {"runs": ["fold_0", "fold_1", "fold_2", "official"]},
    "finetune": {"epochs": 1, "batch_size": 16, "frame_stride": 3},
    "train": {
        "epochs": 2,
        "window": 16,
        "stride": 8,
        "batch_size": 4,
        "seeds": [0, 1],
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
    frames_dir, faces_dir, splits = data / "frames", data / "faces", data / "splits"

    demo.main(["--out", str(root), *p])
    compound, mimicry = root / "C-EXPR-DB", root / "Hume-Vidmimic2"
    frames.main(
        ["--root", str(root), "--compound-root", str(compound), "--mimicry-root", str(mimicry),
         "--out", str(frames_dir), *p]
    )  # fmt: skip
    tracks = pl.read_parquet(artifacts.tracks_table(frames_dir))
    assert tracks.group_by("dataset").len().sort("dataset").rows() == [
        ("affwild2", 6), ("cexpr", 4), ("mimicry", 8)
    ]  # fmt: skip
    assert set(tracks["split"]) == {"Train_Set", "Validation_Set", "Test_Set"}
    for row in tracks.iter_rows(named=True):
        assert pl.read_parquet(artifacts.labels_table(frames_dir, row["track"])).height == row["n_frames"]

    faces.main(["--root", str(root), "--frames", str(frames_dir), "--out", str(faces_dir), *p])
    summary = pl.read_parquet(artifacts.faces_summary(faces_dir))
    assert summary["faces"].sum() > 0.5 * summary["frames"].sum()

    pretrain.main(
        ["--faces", str(faces_dir), "--frames", str(frames_dir), "--out", str(models / "pretrain"), *p]
    )
    assert (models / "pretrain" / artifacts.RECONSTRUCTION).stat().st_size > 0

    geometry.main(
        ["--faces", str(faces_dir), "--frames", str(frames_dir), "--out", str(data / "geometry"), *p]
    )
    audio.main(["--frames", str(frames_dir), "--out", str(data / "audio"), *p])
    text.main(["--frames", str(frames_dir), "--out", str(data / "text"), *p])
    modalities = [
        "--geometry",
        str(data / "geometry"),
        "--audio",
        str(data / "audio"),
        "--text",
        str(data / "text"),
    ]

    folds.main(["--frames", str(frames_dir), "--out", str(splits), *p])
    fold_table = pl.read_parquet(artifacts.folds_table(splits))
    roles = pl.read_parquet(artifacts.roles_table(splits))
    # Both tracks of the two-person video share a fold; no CV run puts one group in two roles.
    duo = fold_table.filter(pl.col("track").str.ends_with("_left") | pl.col("track").str.ends_with("_right"))
    assert duo.height == 2 and duo["fold"].n_unique() == 1
    assert groups_split_across(fold_table, roles.filter(pl.col("run") != "official")) == []

    for run in TINY["folds"]["runs"]:
        run_args = [
            "--run",
            run,
            "--faces",
            str(faces_dir),
            "--frames",
            str(frames_dir),
            "--splits",
            str(splits),
        ]
        finetune.main(
            [*run_args, "--pretrain", str(models / "pretrain"), "--out", str(models / "finetune" / run), *p]
        )
        for view in params["finetune"]["views"]:
            encoder = load_checkpoint(artifacts.view_encoder(models / "finetune" / run, view))
            assert encoder["config"]["run"] == run and encoder["config"]["view"] == view
            assert encoder["config"]["epochs"] == 1
        features.main(
            [
                *run_args,
                "--encoder",
                str(models / "finetune" / run),
                "--out",
                str(data / "features" / run),
                *p,
            ]
        )
        train.main(
            [
                "--run", run, "--features", str(data / "features" / run), "--frames", str(frames_dir),
                "--splits", str(splits), "--out", str(models / "temporal" / run), *modalities, *p,
            ]
        )  # fmt: skip
        raw = pl.read_parquet(artifacts.raw_predictions(models / "temporal" / run))
        run_roles = roles.filter(pl.col("run") == run)
        scored = set(run_roles.filter(pl.col("role") != "train")["track"])
        assert set(raw["track"]) == scored and set(raw["seed"]) == {0, 1}
        for seed in (0, 1):
            assert artifacts.sequence_model(models / "temporal" / run, seed).is_file()

    # The same fine-tune under torchrun, two gloo processes: data-parallel, rank 0 alone writes.
    ddp_out = models / "finetune_ddp" / "fold_0"
    fold_0_args = ["--run", "fold_0", "--faces", str(faces_dir), "--frames", str(frames_dir)]
    fold_0_args += ["--splits", str(splits), "--pretrain", str(models / "pretrain")]
    fold_0_args += ["--out", str(ddp_out), *p]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # "--": torchrun's parser would read the stage's --run as an abbreviation of its own --run-path
    done = subprocess.run([*torchrun, "-m", "stages.finetune", "--", *fold_0_args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("finetune fold_0 [") == 2 * len(params["finetune"]["views"])  # both processes
    for view in params["finetune"]["views"]:
        single = load_checkpoint(artifacts.view_encoder(models / "finetune" / "fold_0", view))
        parallel = load_checkpoint(artifacts.view_encoder(ddp_out, view))
        assert parallel["config"] == single["config"]
        histories = [
            json.loads(artifacts.history(artifacts.view_encoder(out, view).parent).read_text())
            for out in (models / "finetune" / "fold_0", ddp_out)
        ]
        assert [sorted(h) for h in histories[0]] == [sorted(h) for h in histories[1]]
        # The same global batches; the losses differ only where each process averages over its own share
        # of the labelled frames (demo frames miss labels) and draws its own augmentations.
        single_loss, parallel_loss = (h[-1]["loss"] for h in histories)
        assert math.isclose(parallel_loss, single_loss, rel_tol=0.05), (parallel_loss, single_loss)
    assert sorted(path.name for path in ddp_out.rglob("*") if path.is_file()) == sorted(
        path.name for path in (models / "finetune" / "fold_0").rglob("*") if path.is_file()
    )

    table = pl.read_parquet(artifacts.feature_table(data / "features" / "fold_0", tracks["track"][0]))
    assert table.height == tracks["n_frames"][0] * len(params["features"]["views"])
    # Every track of every run gets exactly one prediction per frame, CE from the basic emotions.
    raw = pl.read_parquet(artifacts.raw_predictions(models / "temporal" / "fold_0"))
    counts = raw.group_by("seed", "track").len().join(tracks.select("track", "n_frames"), on="track")
    assert (counts["len"] == counts["n_frames"]).all()
    assert {"ce_0", "basic_0", "emi_0"} <= set(raw.columns)
    assert table.filter(pl.col("has_face"))["embedding"].null_count() == 0

    smooth.main(
        [
            "--models",
            str(models / "temporal"),
            "--frames",
            str(frames_dir),
            "--out",
            str(data / "predictions"),
            *p,
        ]
    )
    raw = pl.read_parquet(artifacts.raw_predictions(models / "temporal" / "fold_0"))
    smoothed = pl.read_parquet(artifacts.smoothed_predictions(data / "predictions", "fold_0"))
    assert raw.height == smoothed.height and raw.columns == smoothed.columns
    probabilities = smoothed.select([f"expr_{i}" for i in range(8)]).to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    choice = json.loads(artifacts.smoothing_choice(data / "predictions", "fold_0").read_text())
    assert (
        set(choice) == {"0", "1"} and choice["0"]["expr"]["chosen"] in params["smooth"]["candidates"]["expr"]
    )

    metrics_dir, plots_dir, decisions_dir = tmp_path / "metrics", tmp_path / "plots", models / "decisions"
    evaluate.main(
        [
            "--models", str(models / "temporal"), "--smoothed", str(data / "predictions"),
            "--frames", str(frames_dir),
            "--splits", str(splits), "--metrics", str(metrics_dir), "--plots", str(plots_dir),
            "--decisions", str(decisions_dir), *p,
        ]
    )  # fmt: skip
    for name in ("cv", "official"):
        summary = json.loads((metrics_dir / f"{name}.json").read_text())
        assert summary["seeds"] == 2
        # CE is scored where a test fold has labelled compound frames with a face (the tiny corpus may have
        # none); its columns are checked in the predictions above.
        tracks_in = ("expr", "au", "va", "emi")
        assert set(tracks_in) <= set(summary), (name, sorted(summary))
        assert math.isfinite(summary["mtl"]["score"])
        for task, key in (("expr", "f1"), ("au", "f1"), ("va", "ccc"), ("ce", "f1"), ("emi", "r")):
            if task not in summary:
                continue
            for field in (key, f"{key}_seed_sd", f"{key}_unsmoothed", "baseline"):
                value = summary[task][field]
                assert isinstance(value, float) and math.isfinite(value), (name, task, field)
            assert set(summary[task]["per_seed"]) == {"0", "1"}
    assert "expr" in json.loads((metrics_dir / "cv.json").read_text())
    assert sorted(p.stem for p in (metrics_dir / "runs").glob("*.json")) == sorted(TINY["folds"]["runs"])
    decisions = json.loads(artifacts.decisions(decisions_dir, "fold_0").read_text())
    assert len(decisions["0"]["decisions"]["au"]["thresholds"]) == 12
    for plot in ("runs.csv", "confusion.csv", "va_timeline.csv", "confusion.png", "va_timeline.png"):
        assert (plots_dir / plot).stat().st_size > 0

    submissions = data / "submissions"
    submit.main(
        ["--models", str(models / "temporal"), "--features", str(data / "features"), *modalities,
         "--smoothed", str(data / "predictions"), "--decisions", str(decisions_dir),
         "--frames", str(frames_dir), "--out", str(submissions), *p]
    )  # fmt: skip
    chosen = tracks.filter(pl.col("split").is_in(["Validation_Set", "Test_Set"]))
    for task, dataset in (("va", "affwild2"), ("expr", "affwild2"), ("au", "affwild2"), ("ce", "cexpr")):
        rows = chosen.filter(pl.col("dataset") == dataset)
        frame_list = dict(rows.select("track", "n_frames").iter_rows())
        path = submissions / f"{task.upper()}.csv"
        assert validate_submission(task, path, frame_list) == []
        assert len(path.read_text().splitlines()) == 1 + sum(frame_list.values())
    videos = chosen.filter(pl.col("dataset") == "mimicry")["track"].to_list()
    assert validate_submission("emi", submissions / "EMI.csv", videos) == []

    # The bundle (stage export) and `affectflow predict` on a raw video reproduce the submit stage's rows
    # for that track: the same faces, features, ensemble, smoothing and thresholds, through other code.
    bundle_dir = models / "bundle"
    export.main(
        ["--finetune", str(models / "finetune"), "--temporal", str(models / "temporal"),
         "--smoothed", str(data / "predictions"), "--decisions", str(decisions_dir),
         "--metrics", str(metrics_dir / "cv.json"), "--out", str(bundle_dir), *p]
    )  # fmt: skip
    one_person = chosen.filter((pl.col("dataset") == "affwild2") & (pl.col("track") == pl.col("video"))).row(
        0, named=True
    )
    video = one_person["video"]
    out = tmp_path / "predicted"
    status = predict_paths(
        root / one_person["video_path"],
        bundle_dir,
        out,
        sounds=root / "audio",
        transcripts=root / "transcripts",
    )
    assert status == 0
    table = pl.read_parquet(out / video / "predictions.parquet")
    assert table.height == one_person["n_frames"] and table["face_id"].n_unique() == 1

    def submitted(task: str) -> list[str]:
        lines = (submissions / f"{task.upper()}.csv").read_text().splitlines()[1:]
        return [line.split(",", 1)[1] for line in lines if line.startswith(f"{video}/")]

    names = list(TASKS["expr"].class_names)
    assert [str(names.index(e)) for e in table["expression"]] == submitted("expr")
    au = table.select([c for c in table.columns if c.startswith("AU") and c.endswith("_c")]).rows()
    assert [",".join(map(str, row)) for row in au] == submitted("au")
    va = np.array([[float(v) for v in row.split(",")] for row in submitted("va")])
    np.testing.assert_allclose(table.select("valence", "arousal").to_numpy(), va, atol=1e-5)
