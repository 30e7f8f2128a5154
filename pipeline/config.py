"""Params (knobs that change results, from params.yaml) and run-time settings (from the environment)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


def load_params(section: str, path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Return one top-level section of params.yaml.

    Raises:
        KeyError: the section is missing (names the file and the sections it has).
    """
    path = Path(path)
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if section not in params:
        raise KeyError(f"{path}: no section '{section}' (has: {', '.join(sorted(params))})")
    return params[section]


def num_workers(default: int | None = None) -> int:
    """Parallel workers for CPU fan-out; AFFECTFLOW_WORKERS overrides (does not change results)."""
    value = os.environ.get("AFFECTFLOW_WORKERS")
    if value:
        return max(1, int(value))
    return default or max(1, min(4, os.cpu_count() or 1))


def device() -> str:
    """Torch device for heavy work; AFFECTFLOW_DEVICE overrides, else CUDA when present."""
    import torch

    return os.environ.get("AFFECTFLOW_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
