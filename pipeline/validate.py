"""Check the names and keyword arguments in params.yaml against the registries, before any work starts.

`pipeline.config.load_config` checks types, ranges and cross-section rules without importing anything
heavy (every stage runs it). This module adds what needs the registries: detectors (built once, so a bad
keyword or a missing weights file shows here), views, encoders and sequence models (built once on tiny
inputs, so `model_kwargs` are checked by the code that uses them). It runs as the first DVC stage
(`check`), so a typo in `train.model` fails in seconds instead of after hours of face detection, and from
`affectflow config`.

Each error names the params file and the key.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, ConfigError
from pipeline.faces.align import VIEWS
from pipeline.faces.detectors import DETECTORS, create_detector
from pipeline.models.encoders import ENCODERS
from pipeline.models.sequence import SEQUENCE_MODELS, InputSpec, create_sequence_model
from pipeline.tasks.definitions import get_tasks, model_tasks

# Keys this check covers; written to the check stage's output (constant, so a params edit that passes the
# check does not make the frames stage rerun).
CHECKED_KEYS = (
    "faces.detector",
    "faces.detector_kwargs",
    "faces.views",
    "pretrain.encoder",
    "pretrain.init",
    "train.model",
    "train.model_kwargs",
)


def _name(value: str, registry: dict, key: str, source: str) -> None:
    if value not in registry:
        raise ConfigError(f"{source}: {key} '{value}' is unknown (registered: {', '.join(sorted(registry))})")


def check_registered(config: Config, source: str = "params.yaml") -> None:
    """Raise `ConfigError` naming the key for an unknown name or an argument its component rejects."""
    faces = config.faces
    _name(faces.detector, DETECTORS, "faces.detector", source)
    for view in faces.views:
        _name(view, VIEWS, "faces.views", source)
    try:
        create_detector(faces.detector, **faces.detector_kwargs)
    except (TypeError, ValueError, OSError, ImportError) as error:
        raise ConfigError(
            f"{source}: faces.detector_kwargs {dict(faces.detector_kwargs)} for '{faces.detector}': {error}"
        ) from None
    _name(config.pretrain.encoder, ENCODERS, "pretrain.encoder", source)
    init = config.pretrain.init
    if init and not Path(init).is_file():
        raise ConfigError(
            f"{source}: pretrain.init '{init}' is not a file (put the MAE / MAE-Face checkpoint there, "
            'or set pretrain.init to "" to pretrain from random weights)'
        )
    train = config.train
    _name(train.model, SEQUENCE_MODELS, "train.model", source)
    try:  # a tiny instance: the model's own constructor checks its keyword arguments and their ranges
        inputs = [InputSpec(view, 8, "frame") for view in train.views]
        if "audio" in train.modalities:
            inputs.append(InputSpec("audio", 8, "frame", "audio"))
        if "text" in train.modalities:
            inputs.append(InputSpec("text", 8, "clip", "text"))
        create_sequence_model(train.model, inputs, model_tasks(get_tasks(train.tasks)), **train.model_kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError) as error:
        raise ConfigError(f"{source}: train.model_kwargs {dict(train.model_kwargs)}: {error}") from None
