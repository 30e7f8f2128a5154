"""Stage check: params.yaml against the registries (detector, views, encoder, sequence model and their
keyword arguments) before any work starts; the frames stage depends on its output, so DVC runs it first.

Output: <out> (JSON), the list of keys checked. It holds no values, so a params edit that passes the check
leaves it unchanged and reruns nothing downstream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pipeline  # noqa: F401
from pipeline.config import load_config
from pipeline.validate import CHECKED_KEYS, check_registered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    check_registered(load_config(args.params), str(args.params))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checked": list(CHECKED_KEYS)}, indent=1) + "\n")
    print(f"{args.params}: every section and registered name is valid")


if __name__ == "__main__":
    main()
