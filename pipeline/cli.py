"""`affectflow`: the command line. Today it shows what exists; `predict` comes with issue 10.

affectflow --help          commands
affectflow stages          the DVC stages and what each writes
affectflow tasks           the tasks, their kinds, levels and metrics
affectflow models          registered encoders and sequence models
affectflow config [FILE]   check params.yaml (unknown / missing keys, ranges, cross-section rules, names)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

STAGES = (
    ("check", "params.yaml against the registries, before any work", "data/params_check.json"),
    ("demo", "built-in demo corpus in the Aff-Wild2 layout", "data/demo"),
    ("frames", "decode every raw video once, align label files to decoded frames", "data/frames"),
    ("faces", "detect, landmark and align faces; crops per view (Prefect fans out videos)", "data/faces"),
    ("geometry", "normalised 68-point landmark geometry per frame (the `landmarks` stream)", "data/geometry"),
    ("audio", "audio features aligned to the frame timeline (log-mel statistics or VGGish)", "data/audio"),
    ("text", "transcript embeddings per video (all-MiniLM-L6-v2, offline)", "data/text"),
    ("pretrain", "MAE pretraining of the ViT face encoder (no labels)", "models/pretrain"),
    ("folds", "leak-free folds and the train/tune/test roles of every run", "data/splits"),
    ("finetune@<run>", "encoder fine-tuned on the run's training tracks only", "models/finetune/<run>"),
    ("features@<run>", "frozen-encoder features, Parquet, one row per (frame, view)", "data/features/<run>"),
    (
        "train@<run>",
        "sequence models, one per seed, predictions on tune and test tracks",
        "models/temporal/<run>",
    ),
    ("smooth", "smoothing per task chosen on each run's tune tracks", "data/predictions"),
    ("evaluate", "official metrics, baselines, mean +- sd over seeds, plots", "metrics/, plots/"),
    ("submit", "challenge submission files from the fold ensemble, validated", "data/submissions"),
)


def cmd_stages(args: argparse.Namespace) -> int:
    width = max(len(name) for name, _, _ in STAGES)
    for name, what, out in STAGES:
        print(f"{name:<{width}}  {what}  -> {out}")
    print("\nRun them with `dvc repro` (one run: `dvc repro train@fold_3`); runs come from folds.runs.")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from pipeline.tasks.definitions import TASKS

    for task in TASKS.values():
        print(
            f"{task.name:<5} {task.kind:<11} per {task.level:<5} {task.metric:<15} "
            f"{', '.join(task.class_names)}"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from pipeline.models.encoders import ENCODERS
    from pipeline.models.sequence import SEQUENCE_MODELS

    print("encoders:        " + ", ".join(ENCODERS))
    print("sequence models: " + ", ".join(SEQUENCE_MODELS))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, load_config
    from pipeline.validate import check_registered

    try:
        config = load_config(args.file)
        check_registered(config, str(args.file))
    except (ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.file}: ok ({config.folds.n_folds}-fold CV, runs {', '.join(config.folds.runs)}; "
        f"seeds {list(config.train.seeds)}; tasks {', '.join(config.train.tasks)})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectflow",
        description="Facial affective-behaviour analysis from video (ABAW tracks): a DVC pipeline and "
        "its library.",
        epilog="The pipeline itself runs with `dvc repro`; `affectflow predict` for new videos comes next.",
    )
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"affectflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("stages", help="list the DVC stages and their outputs").set_defaults(func=cmd_stages)
    commands.add_parser("tasks", help="list the tasks (kind, level, metric, outputs)").set_defaults(
        func=cmd_tasks
    )
    commands.add_parser("models", help="list registered encoders and sequence models").set_defaults(
        func=cmd_models
    )
    config = commands.add_parser("config", help="check a params file")
    config.add_argument("file", nargs="?", type=Path, default=Path("params.yaml"))
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
