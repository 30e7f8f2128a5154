"""A small real bundle for the predict tests (fixture `tiny_bundle` in tests/conftest.py): the registered
demo encoder and a TCN + Transformer with random weights (real architectures, real files, exported by the
real `export_bundle`), so loading, prediction and the output schema are exercised in seconds without a
`dvc repro`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from pipeline import artifacts
from pipeline.config import load_config
from pipeline.models.encoders import create_encoder, encoder_kwargs, feature_dim
from pipeline.models.sequence import InputSpec, create_sequence_model, model_checkpoint
from pipeline.predict.bundle import export_bundle
from pipeline.tasks.definitions import get_tasks, model_tasks

REPO = Path(__file__).resolve().parents[2]
ENCODER = "vit_tiny_80"
RUN, SEED, VIEW = "fold_0", 0, "eye_mouth"


def tiny_config():
    """params.yaml with one run, one seed, the face streams only (no MiniLM to load)."""
    config = load_config(REPO / "params.yaml")
    return dataclasses.replace(
        config,
        folds=dataclasses.replace(config.folds, runs=(RUN,)),
        train=dataclasses.replace(
            config.train, seeds=(SEED,), modalities=(), views=(VIEW, "landmarks"), window=16, stride=8
        ),
    )


def write_training_outputs(root: Path, config) -> dict[str, Path]:
    """The files export reads, as `dvc repro` lays them out, with random-weight models."""
    torch.manual_seed(0)
    encoder = create_encoder(ENCODER)
    dim = feature_dim(encoder)
    finetune = root / "finetune"
    path = artifacts.view_encoder(finetune / RUN, VIEW)
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "model": encoder.state_dict(),
            "encoder": ENCODER,
            "encoder_kwargs": encoder_kwargs(ENCODER),
            "feature_dim": dim,
        },
        path,
    )
    tasks = model_tasks(get_tasks(config.train.tasks))
    inputs = [InputSpec(VIEW, dim), InputSpec("landmarks", 136)]
    kwargs = {"hidden": 16, "tcn_levels": 1, "kernel_size": 3, "transformer_layers": 1, "heads": 2}
    model = create_sequence_model("tcn_transformer", inputs, tasks, **kwargs)
    temporal = root / "temporal"
    path = artifacts.sequence_model(temporal / RUN, SEED)
    path.parent.mkdir(parents=True)
    torch.save(model_checkpoint(model, "tcn_transformer", kwargs, {}), path)
    smoothed, decisions = root / "predictions", root / "decisions"
    smoothed.mkdir()
    decisions.mkdir()
    choice = {name: {"chosen": str(config.smooth.specs(name)[-1])} for name in ("expr", "au", "va", "ce")}
    artifacts.smoothing_choice(smoothed, RUN).write_text(json.dumps({str(SEED): choice}))
    artifacts.decisions(decisions, RUN).write_text(
        json.dumps({str(SEED): {"decisions": {"au": {"thresholds": [0.5] * 12}}}})
    )
    metrics = root / "cv.json"
    metrics.write_text(json.dumps({"expr": {"f1": 0.3, "f1_seed_sd": 0.01, "baseline": 0.1}}))
    return {
        "finetune_dir": finetune,
        "temporal_dir": temporal,
        "smoothed_dir": smoothed,
        "decisions_dir": decisions,
        "metrics_path": metrics,
    }


def make_tiny_bundle(root: Path) -> Path:
    """Write the training outputs and export them; returns the bundle folder."""
    config = tiny_config()
    export_bundle(root / "bundle", config, **write_training_outputs(root, config))
    return root / "bundle"
