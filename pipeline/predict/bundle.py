"""The trained pipeline as one folder that predicts on a new machine (`affectflow export`, stage export).

Layout of a bundle folder:

    bundle.json                  what to run and how (below), with the sha256 of every file
    encoders/<run>/<view>.pt     each cross-validation run's fine-tuned encoder per view
    temporal/<run>/seed_<s>.pt   each run's sequence model per seed (feature standardisation inside)
    audio/<file>                 only with `audio.extractor: vggish`: the VGGish weights (and PCA)
    text/                        only with a custom `text.model`: that sentence-transformers folder

bundle.json keys:
- `format`, `format_version`: "affectflow-bundle", `FORMAT_VERSION` (a loader refuses other formats and
  newer versions, with a message that says which);
- `versions`: affectflow, torch and timm that wrote it (a different torch major.minor is a note);
- `faces`: the face-stage knobs (`pipeline.faces.process.FaceConfig` as a dict);
- `features`: encoder views, pooling, batch size; `audio`: extractor and weights files; `text`: model;
- `sequence`: the sequence models' inputs (views, modalities), window, stride, track-feature mode;
- `tasks`: the outputs (`ce` is computed from the `basic` head); `runs`, `seeds`: the fold ensemble;
- `smoothing`, `knobs`, `fill_faceless`: post-processing chosen on the runs' tuning folds (the same
  settings the submit stage uses: `pipeline.submission.predict.chosen_settings`);
- `metrics`: the cross-validation summary the models were validated with (metrics/cv.json);
- `files`: relative path -> sha256 (a loader checks them: a truncated copy is an error, not a surprise).

Nothing in it holds a wall-clock time or an absolute path, so exporting twice gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import pipeline
from pipeline import artifacts
from pipeline.config import GEOMETRY_STREAM, OFFICIAL_RUN, Config
from pipeline.faces.process import FaceConfig, face_config
from pipeline.features.cache import load_encoder
from pipeline.models.encoders import load_checkpoint
from pipeline.models.sequence import model_from_checkpoint
from pipeline.submission.predict import chosen_settings
from pipeline.tasks.definitions import TASKS, Task, get_tasks

FORMAT = "affectflow-bundle"
FORMAT_VERSION = 1
META_FILE = "bundle.json"


class BundleError(ValueError):
    """A bundle folder that cannot be used; the message says which file and what is wrong."""


def encoder_file(run: str, view: str) -> str:
    return f"encoders/{run}/{view}.pt"


def sequence_file(run: str, seed: int) -> str:
    return f"temporal/{run}/seed_{seed}.pt"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_tasks(config: Config, model_tasks: list[str]) -> list[Task]:
    """The tasks a bundle outputs: `train.tasks` the models have a head for (or, like `ce`, are computed
    from one)."""
    return [
        task
        for task in get_tasks(config.train.tasks)
        if task.name in model_tasks or (task.predicted_from and task.predicted_from in model_tasks)
    ]


def export_bundle(
    out: Path,
    config: Config,
    *,
    finetune_dir: Path,
    temporal_dir: Path,
    smoothed_dir: Path,
    decisions_dir: Path,
    metrics_path: Path,
) -> dict[str, Any]:
    """Write a bundle folder from what `dvc repro` trained; returns its bundle.json content.

    Args:
        out: the bundle folder (replaced).
        finetune_dir, temporal_dir: models/finetune and models/temporal.
        smoothed_dir, decisions_dir: data/predictions (smoothing choices) and models/decisions (thresholds).
        metrics_path: metrics/cv.json.
    """
    runs = [run for run in config.folds.runs if run != OFFICIAL_RUN]
    if not runs:
        raise BundleError("export needs cross-validation runs (folds.runs fold_<k>): they are the ensemble")
    encoder_views = [view for view in config.train.views if view != GEOMETRY_STREAM]
    first = load_checkpoint(artifacts.sequence_model(temporal_dir / runs[0], config.train.seeds[0]))
    tasks = output_tasks(config, list(first["tasks"]))
    smoothing, knobs = chosen_settings(smoothed_dir, decisions_dir, runs, tasks, config)

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    copies: dict[str, Path] = {}
    for run in runs:
        for view in encoder_views:
            copies[encoder_file(run, view)] = artifacts.view_encoder(finetune_dir / run, view)
        for seed in config.train.seeds:
            copies[sequence_file(run, seed)] = artifacts.sequence_model(temporal_dir / run, seed)
    audio = {"extractor": config.audio.extractor, "weights": "", "pca": ""}
    if config.audio.extractor == "vggish":
        for key, source in (("weights", config.audio.vggish_weights), ("pca", config.audio.vggish_pca)):
            if source:
                audio[key] = f"audio/{Path(source).name}"
                copies[audio[key]] = Path(source)
    for relative, source in copies.items():
        if not source.is_file():
            raise BundleError(f"export: {source} is missing (run `dvc repro` first)")
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / relative)
    text_model = ""
    if config.text.model:
        shutil.copytree(config.text.model, out / "text")
        text_model = "text"

    files = {
        path.relative_to(out).as_posix(): sha256(path) for path in sorted(out.rglob("*")) if path.is_file()
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": {
            "affectflow": pipeline.__version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
        },
        "faces": dataclasses.asdict(face_config(config.faces)),
        "features": {
            "views": encoder_views,
            "pool": config.features.pool,
            "batch_size": config.features.batch_size,
        },
        "audio": audio,
        "text": {"model": text_model},
        "sequence": {
            "views": list(config.train.views),
            "modalities": list(config.train.modalities),
            "window": config.train.window,
            "stride": config.train.stride,
            "track_features": config.train.track_features,
        },
        "tasks": [task.name for task in tasks],
        "runs": runs,
        "seeds": list(config.train.seeds),
        "smoothing": smoothing,
        "knobs": knobs,
        "fill_faceless": config.smooth.fill_faceless,
        "metrics": json.loads(metrics_path.read_text()),
        "files": files,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


@dataclass
class Bundle:
    """A loaded bundle: its settings, and its models built on first use (then kept).

    Attributes:
        root: the bundle folder.
        meta: bundle.json.
        notes: what the loader noticed but did not refuse (a different torch version).
    """

    root: Path
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"
    _encoders: dict[str, dict[str, nn.Module]] = field(default_factory=dict, repr=False)
    _sequence_models: dict[str, list[nn.Module]] = field(default_factory=dict, repr=False)

    @property
    def tasks(self) -> list[Task]:
        return get_tasks(self.meta["tasks"])

    @property
    def runs(self) -> list[str]:
        return list(self.meta["runs"])

    @property
    def seeds(self) -> list[int]:
        return [int(seed) for seed in self.meta["seeds"]]

    @property
    def sequence(self) -> dict[str, Any]:
        return self.meta["sequence"]

    def face_config(self) -> FaceConfig:
        return FaceConfig(**self.meta["faces"])

    def encoders(self, run: str) -> dict[str, nn.Module]:
        """view -> the run's frozen encoder for that view, in eval mode."""
        if run not in self._encoders:
            self._encoders[run] = {
                view: load_encoder(self.root / encoder_file(run, view), self.device)
                for view in self.meta["features"]["views"]
            }
        return self._encoders[run]

    def sequence_models(self, run: str) -> list[nn.Module]:
        """The run's sequence models, one per seed, in eval mode."""
        if run not in self._sequence_models:
            self._sequence_models[run] = [
                model_from_checkpoint(load_checkpoint(self.root / sequence_file(run, seed)), self.device)
                for seed in self.seeds
            ]
        return self._sequence_models[run]

    def describe(self) -> dict[str, Any]:
        """What a report shows of the bundle: name, versions, runs x seeds, and the CV headline scores."""
        metrics = self.meta.get("metrics", {})
        headline = {}
        for name in self.meta["tasks"]:
            scores = metrics.get(name, {})
            metric = next((key for key in ("f1", "ccc", "r") if key in scores), None)
            if metric is not None:
                headline[name] = {
                    "metric": metric,
                    "score": scores[metric],
                    "seed_sd": scores.get(f"{metric}_seed_sd"),
                    "baseline": scores.get("baseline"),
                }
        return {
            "name": self.root.name,
            "versions": self.meta["versions"],
            "ensemble": f"{len(self.runs)} runs x {len(self.seeds)} seeds",
            "metrics": headline,
        }


def load_bundle(root: Path | str, device: str = "cpu", check_files: bool = True) -> Bundle:
    """Open a bundle folder, checking its format, version, tasks and files.

    Raises:
        BundleError: no bundle.json, another format, a newer format version, an unknown task, or a file
            that is missing or differs from its recorded sha256 (each named).
    """
    root = Path(root)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise BundleError(
            f"{root}: not a bundle (no {META_FILE}); make one with `affectflow export` or `dvc repro export`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{meta_path}: not valid JSON ({error})") from error
    if meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{meta_path}: bundle format version {version}, this affectflow ({pipeline.__version__}) reads "
            f"up to {FORMAT_VERSION}: upgrade affectflow, or export the bundle again with this version"
        )
    missing_keys = [
        key for key in ("faces", "features", "sequence", "tasks", "runs", "seeds", "files") if key not in meta
    ]
    if missing_keys:
        raise BundleError(f"{meta_path}: missing key(s) {missing_keys}")
    unknown = [name for name in meta["tasks"] if name not in TASKS]
    if unknown:
        raise BundleError(f"{meta_path}: unknown task(s) {unknown} (this affectflow knows {list(TASKS)})")
    if check_files:
        for relative, digest in meta["files"].items():
            path = root / relative
            if not path.is_file():
                raise BundleError(f"{root}: {relative} is missing (the bundle is incomplete; copy it again)")
            if sha256(path) != digest:
                raise BundleError(f"{root}: {relative} differs from its recorded sha256 (damaged or edited)")
    notes = []
    written = meta.get("versions", {}).get("torch", "")
    if written.split(".")[:2] != torch.__version__.split(".")[:2]:
        notes.append(f"bundle written with torch {written}, running torch {torch.__version__}")
    return Bundle(root, meta, notes, device)
