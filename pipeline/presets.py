"""Params presets: `presets/<name>.yaml` holds the params.yaml keys a preset changes (seeds' recipes, CPU).

    python -m pipeline.presets list              # the presets and their first comment line
    python -m pipeline.presets show seed_003     # the `dvc exp run -S` arguments of a preset
    python -m pipeline.presets run seed_003      # dvc exp run --name seed_003 -S ... (one DVC experiment)
    python -m pipeline.presets apply seed_003    # write the preset into params.yaml (a lasting switch)

A preset is applied on top of params.yaml; mappings merge key by key, anything else (lists included) is
replaced. The merged params must pass `pipeline.config` checks, so a preset with a typo fails at once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import PARAMS_FILE, ConfigError, config_from_dict

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown preset '{name}' (known: {known}; files in {PRESETS_DIR})")
    return path


def load_preset(name: str) -> dict[str, Any]:
    with preset_path(name).open() as f:
        preset = yaml.safe_load(f) or {}
    if not isinstance(preset, dict):
        raise ConfigError(f"{preset_path(name)}: expected a mapping of params sections")
    return preset


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """base with changes applied: mappings merge recursively, other values are replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(changes: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{dotted}.")
        else:
            out[dotted] = value
    return out


def apply_preset(params: dict[str, Any], name: str) -> dict[str, Any]:
    """params with the preset applied, checked by `pipeline.config` (ConfigError names the problem)."""
    merged = merge(params, load_preset(name))
    config_from_dict(merged, f"params.yaml + {preset_path(name).name}")
    return merged


def set_arguments(name: str) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` (values in JSON, which DVC's override parser reads)."""
    args = []
    for key, value in flatten(load_preset(name)).items():
        args += ["-S", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="params presets (see pipeline/presets.py)")
    parser.add_argument("action", choices=("list", "show", "run", "apply"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--params", type=Path, default=Path(PARAMS_FILE))
    args = parser.parse_args(argv)
    if args.action == "list":
        for path in sorted(PRESETS_DIR.glob("*.yaml")):
            first = path.read_text().splitlines()[0].lstrip("# ")
            print(f"{path.stem:16s} {first}")
        return 0
    if not args.name:
        parser.error(f"{args.action} needs a preset name")
    with args.params.open() as f:
        merged = apply_preset(yaml.safe_load(f), args.name)  # fails early on a bad preset
    if args.action == "show":
        print(" ".join(set_arguments(args.name)))
    elif args.action == "run":
        command = ["dvc", "exp", "run", "--name", args.name, *set_arguments(args.name)]
        print(" ".join(command))
        return subprocess.call(command)
    else:  # apply
        args.params.write_text(yaml.safe_dump(merged, sort_keys=False, width=110))
        print(f"{args.params}: preset {args.name} applied (comments are not kept; git diff shows the change)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
