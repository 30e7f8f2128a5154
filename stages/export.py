"""Stage export: what `dvc repro` trained, packed into one bundle folder that `affectflow predict` runs on
any machine (`pipeline.predict.bundle`): every cross-validation run's encoders and sequence models (all
seeds) as the fold ensemble, the face settings, the smoothing and AU thresholds chosen on the runs' tuning
folds, and the cross-validation metrics the models were validated with.

Output: <out>/ (bundle.json and the model files, each with its sha256 in bundle.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pipeline  # noqa: F401
from pipeline.config import load_config
from pipeline.predict.bundle import export_bundle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--finetune", "--temporal", "--smoothed", "--decisions", "--metrics", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    meta = export_bundle(
        args.out,
        load_config(args.params),
        finetune_dir=args.finetune,
        temporal_dir=args.temporal,
        smoothed_dir=args.smoothed,
        decisions_dir=args.decisions,
        metrics_path=args.metrics,
    )
    print(
        f"export: {args.out} ({len(meta['runs'])} runs x {len(meta['seeds'])} seeds, tasks "
        f"{', '.join(meta['tasks'])}, {len(meta['files'])} files)"
    )


if __name__ == "__main__":
    main()
