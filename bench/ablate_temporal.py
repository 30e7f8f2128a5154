"""Ablations of what sits on the frozen features (issue 9): temporal model, view fusion, audio and text,
smoothing and the seed ensemble, on the demo corpus, with the pipeline's own CV protocol.

    python -m bench.ablate_temporal                       # after `make demo`
    python -m bench.ablate_temporal --variants default mlp no_audio_text

Each variant overrides params.yaml's `train` section, retrains every cross-validation run (all of
`train.seeds`) on the cached features (data/features, data/geometry, data/audio, data/text), then smooths
and evaluates them exactly as the smooth and evaluate stages do, in a scratch folder. Reported per task:
the CV test score (mean over folds, then mean +- sd over seeds), its unsmoothed value, the seed ensemble,
and the tuning-fold score (mean over runs and seeds of the chosen smoothing's tune score): choose between
variants on `tune`, never on `test`. Fusion variants need the face view's features too: run them after an
experiment with `finetune.views`/`features.views` [face, eye_mouth] (`--features` points at them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import pipeline  # noqa: F401
from pipeline import artifacts
from pipeline.config import OFFICIAL_RUN, load_config
from pipeline.evaluation.evaluate import evaluate_runs
from pipeline.evaluation.report import smooth_runs
from pipeline.runtime import configure_torch
from pipeline.tasks.definitions import get_task
from pipeline.tasks.scores import headline
from pipeline.training.cv import train_run

KW = "model_kwargs"
# name -> overrides of the `train` section (model_kwargs entries are merged into the params' own).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "mlp": {"model": "mlp"},
    "tcn": {"model": "tcn"},
    "multimodal_transformer": {"model": "multimodal_transformer", KW: {"transformer_layers": 4}},
    "landmarks_only": {"views": ("landmarks",)},
    "encoder_only": {"views": ("eye_mouth",)},
    "no_audio_text": {"modalities": ()},
    "audio_only": {"modalities": ("audio",)},
    "text_only": {"modalities": ("text",)},
    "fusion_mean": {KW: {"fusion": "mean"}},
    "fusion_concat": {KW: {"fusion": "concat"}},
    "fusion_updown_mean": {KW: {"fusion": "updown_mean"}},
    "fusion_updown_concat": {KW: {"fusion": "updown_concat"}},
    "dual_view": {"views": ("face", "eye_mouth", "landmarks")},
    "scene_ensemble": {"scenes": 2},
    "epoch_ensemble": {"epoch_ensemble": 5},
}


def summary_row(name: str, summary: dict, smoothed: Path, runs: list[str]) -> dict:
    """One table row from a CV summary (metrics/cv.json form) and the runs' smoothing choices."""
    tune: dict[str, list[float]] = {}
    for run in runs:
        for seed_choice in json.loads(artifacts.smoothing_choice(smoothed, run).read_text()).values():
            for task, entry in seed_choice.items():
                tune.setdefault(task, []).append(entry["tune_scores"][entry["chosen"]])
    row: dict[str, Any] = {"variant": name}
    for task, entry in summary.items():
        if not isinstance(entry, dict) or task == "absent_tasks":
            continue
        if task == "mtl":
            row["mtl"] = {
                "test": entry["score"],
                "sd": entry["score_seed_sd"],
                "ens": entry.get("score_seed_ensemble"),
            }
            continue
        key = headline(get_task(task))
        row[task] = {
            "test": entry[key],
            "sd": entry[f"{key}_seed_sd"],
            "unsmoothed": entry[f"{key}_unsmoothed"],
            "ens": entry.get(f"{key}_seed_ensemble"),
            "tune": round(float(np.nanmean(tune[task])), 4) if task in tune else None,
            "baseline": entry["baseline"],
        }
    return row


def run_variant(name: str, overrides: dict[str, Any], args, config, device: str, scratch: Path) -> dict:
    runs = [run for run in config.folds.runs if run != OFFICIAL_RUN]
    if name == "default" and args.reuse_default:  # the pipeline's own outputs are this variant
        return summary_row(
            name, json.loads(Path("metrics/cv.json").read_text()), Path("data/predictions"), runs
        )
    train = config.train
    kwargs = dict(train.model_kwargs) | overrides.get(KW, {})
    train = dataclasses.replace(train, **{k: v for k, v in overrides.items() if k != KW}, model_kwargs=kwargs)
    config = dataclasses.replace(
        config, train=train, folds=dataclasses.replace(config.folds, runs=tuple(runs))
    )
    models, smoothed = scratch / name / "temporal", scratch / name / "predictions"
    for run in runs:
        train_run(
            run, args.features / run, args.frames, args.splits, models / run, train, device,
            geometry_dir=args.geometry, audio_dir=args.audio, text_dir=args.text,
        )  # fmt: skip
    smooth_runs(models, args.frames, smoothed, config)
    summary = evaluate_runs(
        models, smoothed, args.frames, args.splits, scratch / name / "metrics", scratch / name / "plots",
        scratch / name / "decisions", config,
    )["cv"]  # fmt: skip
    return summary_row(name, summary, smoothed, runs)


def markdown(rows: list[dict]) -> str:
    tasks = [t for t in ("expr", "au", "va", "ce", "emi", "mtl") if any(t in r for r in rows)]
    lines = ["| variant | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for row in rows:
        cells = []
        for task in tasks:
            e = row.get(task)
            if e is None:
                cells.append("")
                continue
            tune = f" [tune {e['tune']:.3f}]" if e.get("tune") is not None else ""
            cells.append(f"{e['test']:.3f} ± {e['sd']:.3f}{tune}")
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--geometry", type=Path, default=Path("data/geometry"))
    parser.add_argument("--audio", type=Path, default=Path("data/audio"))
    parser.add_argument("--text", type=Path, default=Path("data/text"))
    parser.add_argument("--frames", type=Path, default=Path("data/frames"))
    parser.add_argument("--splits", type=Path, default=Path("data/splits"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/ablation_temporal.json"))
    parser.add_argument(
        "--reuse-default", action="store_true", help="take `default` from metrics/cv.json (after dvc repro)"
    )
    args = parser.parse_args(argv)
    config = load_config(args.params)
    device = configure_torch()
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    scratch = Path(tempfile.mkdtemp(prefix="ablate_temporal_"))
    try:
        for name in args.variants:
            row = run_variant(name, VARIANTS[name], args, config, device, scratch)
            rows = [r for r in rows if r["variant"] != name] + [row]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1) + "\n")  # after each variant: resumable
            print(markdown([row]), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    order = {name: i for i, name in enumerate(VARIANTS)}
    print(markdown(sorted(rows, key=lambda r: order.get(r["variant"], 99))))


if __name__ == "__main__":
    main()
