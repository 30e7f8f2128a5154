"""Stage submit: the challenge submission files of every track, predicted by the fold ensemble.

The tracks of `submit.splits` (C-EXPR-DB's Test_Set; the demo's Validation_Set stands in for the
others) are predicted by every cross-validation run's sequence models (all seeds) and averaged
(`pipeline.submission.predict`), smoothed and decided with the settings the runs chose on their tuning
folds, then written in the official formats (`pipeline.submission`): Aff-Wild2 tracks -> VA, EXPR, AU
files (one row per frame), C-EXPR-DB tracks -> CE, Hume-Vidmimic2 videos -> EMI (one row per video).
Each file is checked by the validator against the frame list before the stage ends.

Outputs: <out>/<TRACK>.csv per task (e.g. EXPR.csv) and <out>/summary.json (rows, tracks, smoothing and
thresholds used).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import polars as pl

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import OFFICIAL_RUN, load_config
from pipeline.features.sequences import present_tasks
from pipeline.runtime import configure_torch
from pipeline.submission.predict import chosen_settings, decide_tracks, ensemble_outputs, sequences_for_runs
from pipeline.submission.validate import check_submission
from pipeline.submission.writers import write_submission

# Which dataset's tracks each challenge track submits.
TASK_DATASET = {"va": "affwild2", "expr": "affwild2", "au": "affwild2", "ce": "cexpr", "emi": "mimicry"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--models", "--features", "--smoothed", "--decisions", "--frames", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    for flag in ("--geometry", "--audio", "--text"):
        parser.add_argument(flag, type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    config = load_config(args.params)
    device = configure_torch()
    runs = [run for run in config.folds.runs if run != OFFICIAL_RUN]
    if not runs:
        raise ValueError("submit needs cross-validation runs (folds.runs fold_<k>) to ensemble")
    tasks = [
        t
        for t in present_tasks(args.frames, config.evaluate.tasks, "evaluate.tasks")
        if t.name in TASK_DATASET
    ]
    tracks_table = pl.read_parquet(artifacts.tracks_table(args.frames)).filter(
        pl.col("split").is_in(list(config.submit.splits))
    )
    if tracks_table.height == 0:
        raise ValueError(
            f"submit.splits {list(config.submit.splits)}: no track in {artifacts.tracks_table(args.frames)}"
        )
    tracks = tracks_table["track"].to_list()
    extra = {"geometry_dir": args.geometry, "audio_dir": args.audio, "text_dir": args.text}
    sequences = sequences_for_runs(runs, tracks, args.frames, args.features, extra, config)
    outputs = ensemble_outputs(
        sequences, args.models, config.train.seeds, tasks, config.train.window, config.train.stride, device
    )
    sources = {s.track: s.sources() for s in sequences[runs[0]]}
    smoothing, knobs = chosen_settings(args.smoothed, args.decisions, runs, tasks, config)
    decided = decide_tracks(outputs, sources, tasks, smoothing, knobs, config.smooth.fill_faceless)

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    summary = {
        "splits": list(config.submit.splits),
        "runs": runs,
        "seeds": list(config.train.seeds),
        "files": {},
    }
    dataset_of = dict(tracks_table.select("track", "dataset").iter_rows())
    n_frames = dict(tracks_table.select("track", "n_frames").iter_rows())
    for task in tasks:
        chosen = [t for t in tracks if dataset_of[t] == TASK_DATASET[task.name]]
        if not chosen:
            continue
        table = decided[task.name].filter(pl.col("track").is_in(chosen))
        frame_list = chosen if task.level == "video" else {t: n_frames[t] for t in chosen}
        path = args.out / f"{task.name.upper()}.csv"
        write_submission(task.name, table, path, frame_list)
        rows = check_submission(task.name, path, frame_list)  # raises SubmissionError on any problem
        summary["files"][path.name] = {
            "rows": rows,
            "tracks": len(chosen),
            "smoothing": smoothing.get(task.name, "none"),
            **knobs.get(task.name, {}),
        }
        print(f"submit: {path} ({rows} rows, {len(chosen)} tracks) validated")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
