"""affectflow: facial affective-behaviour analysis from video (importable library and Prefect flows)."""

import os
from pathlib import Path


def _repo_root() -> Path:
    """The checkout this package lives in (it is installed editable); else the current directory."""
    candidate = Path(__file__).resolve().parent.parent
    return candidate if (candidate / "dvc.yaml").is_file() else Path.cwd()


# Prefect's settings, before anything imports prefect (every entry point imports `pipeline` first), so
# they hold however the pipeline is started (`dvc repro`, `make`, pytest, a notebook): its state lives in
# the repository, not in ~/.prefect (shared with other projects: "database is locked"), and nothing is
# sent home. setdefault: a value the user exports wins.
os.environ.setdefault("PREFECT_HOME", str(_repo_root() / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from pipeline.compat import install_torchvision_shim  # noqa: E402  (after the environment above)

# Every entry point imports `pipeline` first, so the shim is in place before timm imports torchvision.
install_torchvision_shim()

__version__ = "0.1.0"
