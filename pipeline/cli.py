"""`affectflow`: the command line.

affectflow --help          commands
affectflow predict VIDEO_OR_FOLDER [--bundle DIR] [--out DIR] [--report]
                           per-frame predictions for new videos with a trained bundle
affectflow export [--out DIR]
                           pack what `dvc repro` trained into a bundle (the DVC stage `export` does it too)
affectflow repro [ARGS]    `dvc repro ARGS` with one Prefect server shared by all its stages
affectflow worker --pool P  a Prefect worker of work pool P (fan-out jobs of stages run with
                           AFFECTFLOW_TASK_RUNNER=workpool:P), one per GPU
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
    ("export", "the fold ensemble and its settings as one bundle for `affectflow predict`", "models/bundle"),
)
DEFAULT_BUNDLE = Path("models/bundle")  # the export stage's output


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


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.predict.run import predict_paths
    from pipeline.runtime import configure_torch, steady_heap

    steady_heap()  # freed memory is not kept as heap fragments over a long video
    device = configure_torch()
    return predict_paths(
        args.source,
        args.bundle,
        args.out,
        report=args.report,
        transcripts=args.transcripts,
        sounds=args.sounds,
        device=device,
        max_frames=args.max_frames,
    )


def cmd_repro(args: argparse.Namespace) -> int:
    from pipeline.flows import run_with_server

    return run_with_server(["dvc", "repro", *args.dvc_args])


def cmd_worker(args: argparse.Namespace) -> int:
    from prefect.settings import get_current_settings

    from pipeline.workpool import ensure_work_pool, start_worker

    if not get_current_settings().api.url:
        print(
            "affectflow worker: PREFECT_API_URL is not set: export the address of the Prefect server the "
            "stages use (`prefect server start` prints it), e.g. http://host:4200/api",
            file=sys.stderr,
        )
        return 2
    ensure_work_pool(args.pool)  # before the worker, which would make it too, racing its neighbours
    worker = start_worker(args.pool, args.name, args.limit)
    try:
        return worker.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the worker too (same process group): let it stop
        return worker.wait()


def cmd_export(args: argparse.Namespace) -> int:
    from stages.export import main as export

    export(
        [
            "--finetune", "models/finetune", "--temporal", "models/temporal",
            "--smoothed", "data/predictions", "--decisions", "models/decisions",
            "--metrics", "metrics/cv.json",
            "--out", str(args.out), "--params", str(args.params),
        ]
    )  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectflow",
        description="Facial affective-behaviour analysis from video (ABAW tracks): a DVC pipeline and "
        "its library.",
        epilog="The pipeline runs with `dvc repro`; `affectflow predict` runs its bundle on new videos.",
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
    predict = commands.add_parser(
        "predict",
        help="per-frame predictions for a video or a folder of videos",
        description="Exit status: 0 every video written, 1 some videos failed (listed in <out>/run.json), "
        "2 nothing to do (no video found, or the bundle cannot be used).",
    )
    predict.add_argument("source", type=Path, help="a video file, or a folder searched for videos")
    predict.add_argument(
        "--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle folder (default: %(default)s)"
    )
    predict.add_argument(
        "--out", type=Path, default=Path("predictions"), help="output folder (default: %(default)s)"
    )
    predict.add_argument(
        "--report", action="store_true", help="also an HTML report and an annotated MP4 per video"
    )
    predict.add_argument("--transcripts", type=Path, help="folder of <video>.txt transcripts (text input)")
    predict.add_argument(
        "--sounds", type=Path, help="folder of <video>.wav|.mp3|... used instead of the videos' own audio"
    )
    predict.add_argument("--max-frames", type=int, help="stop each video after this many frames (previews)")
    predict.set_defaults(func=cmd_predict)
    export = commands.add_parser("export", help="pack the trained pipeline into a bundle folder")
    export.add_argument(
        "--out", type=Path, default=DEFAULT_BUNDLE, help="bundle folder (default: %(default)s)"
    )
    export.add_argument("--params", type=Path, default=Path("params.yaml"))
    export.set_defaults(func=cmd_export)
    repro = commands.add_parser(
        "repro",
        help="`dvc repro` with one Prefect server shared by all its stages",
        description="Runs `dvc repro ARGS` (any of its arguments) with one local Prefect server, started in "
        "the background and stopped at the end, instead of a temporary server per stage that fans out.",
    )
    repro.add_argument("dvc_args", nargs=argparse.REMAINDER, help="arguments for `dvc repro`")
    repro.set_defaults(func=cmd_repro)
    worker = commands.add_parser(
        "worker",
        help="a Prefect worker that runs fan-out jobs from a work pool",
        description="Starts `prefect worker start --type process` for the pool, from this checkout and with "
        "its Prefect settings (PREFECT_API_URL: the server the stages use). Run one per GPU, each with its "
        "own CUDA_VISIBLE_DEVICES. Stages send their jobs there with AFFECTFLOW_TASK_RUNNER=workpool:POOL.",
    )
    worker.add_argument("--pool", required=True, help="work pool name (made if missing)")
    worker.add_argument("--name", help="worker name shown in Prefect (default: Prefect's)")
    worker.add_argument("--limit", type=int, default=1, help="runs at once (default: %(default)s)")
    worker.set_defaults(func=cmd_worker)
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
