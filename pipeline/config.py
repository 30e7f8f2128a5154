"""Typed params: one frozen dataclass per `params.yaml` section, built and checked by `load_config`.

Every knob that changes results lives in params.yaml (run-time settings that do not live in
`pipeline.runtime`). `load_config` rejects an unknown or missing section or key, and a value of the wrong
type, with a message naming the file, the section and the key; then it checks the sections against each
other (views used downstream are produced upstream, window vs stride, tasks known, runs well formed). The
dataclass of a section travels whole into the library and is stored in checkpoints (`asdict`).

Never name a param `size` or `nfiles`: DVC leaves keys of those names out of its run-cache key, so a change
to them would restore a stale output (a test checks).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.tasks.definitions import TASKS

PARAMS_FILE = Path("params.yaml")
RUN_PATTERN = re.compile(r"^fold_(\d+)$")
OFFICIAL_RUN = "official"
# The landmark-geometry stream (stage geometry): needs no encoder, so it is a train view of its own.
GEOMETRY_STREAM = "landmarks"


class ConfigError(ValueError):
    """A params file that does not match the dataclasses (names the file, section and key)."""


@dataclass(frozen=True)
class DataConfig:
    root: str  # Aff-Wild2-layout root; data/demo is the built-in demo corpus
    compound_root: str  # C-EXPR-DB-layout root ("" = none)
    mimicry_root: str  # Hume-Vidmimic2-layout root ("" = none)


@dataclass(frozen=True)
class DemoConfig:
    seed: int
    n_identities: int
    videos_per_identity: int
    two_person_videos: int
    frames_per_video: int
    frames_jitter: float
    fps_choices: tuple[int, ...]
    frame_width: int
    frame_height: int
    face_box: float
    max_roll: float
    val_share: float
    task_drop_share: float
    no_face_share: float
    blur_share: float
    avi_share: float
    audio_rate: int
    compound_videos: int
    compound_frames: int
    mimicry_videos: int
    mimicry_frames: int


@dataclass(frozen=True)
class FramesConfig:
    label_tolerance: int  # label rows may differ from the decoded timeline by this many without an error
    force_label_alignment: bool  # true: a bigger difference is trimmed / padded at the end and reported


@dataclass(frozen=True)
class FacesConfig:
    source: str
    detector: str
    detector_kwargs: dict[str, Any]
    detect_every: int
    max_faces: int
    min_iou: float
    max_gap: int
    min_frames: int
    min_face_size: float
    min_sharpness: float
    crop_size: int
    views: tuple[str, ...]


@dataclass(frozen=True)
class PretrainConfig:
    encoder: str
    views: tuple[str, ...]  # crops of these views are pooled into one training set (one encoder)
    frame_stride: int
    init: str  # "" (random init) or an external checkpoint path (MAE reference, MAE-Face, ViTMAE)
    init_layout: str  # pipeline.models.checkpoints.LAYOUTS key, or "auto"
    mask_ratio: float
    decoder_dim: int
    decoder_depth: int
    norm_pix_loss: bool
    crop_scale_min: float  # random resized crop keeps [crop_scale_min, 1] of the area (1.0 = off)
    hflip: bool
    epochs: int  # 0 with an init: use the init as it is (pretraining skipped)
    batch_size: int
    accumulation: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    seed: int


@dataclass(frozen=True)
class FoldsConfig:
    runs: tuple[str, ...]  # fold_0..fold_{k-1} (k-fold CV) and optionally "official"; the DVC foreach axis
    seed: int

    @property
    def n_folds(self) -> int:
        return sum(bool(RUN_PATTERN.match(run)) for run in self.runs)


@dataclass(frozen=True)
class FinetuneConfig:
    recipe: str  # FINETUNE_RECIPES: plain | cotex | emma | chain
    views: tuple[str, ...]  # one encoder fine-tuned per view (seed 000's dual view: face + eye_mouth)
    tasks: tuple[str, ...]
    frame_stride: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    layer_decay: float
    warmup_epochs: float
    drop_path: float
    frozen_blocks: int
    clip_grad: float
    accumulation: int
    ema_decay: float
    class_balance: bool
    crop_margin: float  # resize to (1 + m) x the input, random crop back (seed 001: 232 -> 224, m = 0.036)
    colour_jitter: float  # brightness / contrast / saturation jitter strength (0 = off)
    mixup_alpha: float  # Beta(a, a) mixup of images and targets (0 = off)
    cutmix_alpha: float  # Beta(a, a) cutmix (0 = off; with both on, each batch picks one)
    cotex_mask_ratio: float  # masked CoTEX: share of patches each of the two ViTs does not see
    cotex_weight: float  # masked CoTEX: weight of the JS-divergence consistency term
    seed: int


@dataclass(frozen=True)
class FeaturesConfig:
    views: tuple[str, ...]
    pool: str  # mean (of the patch tokens, as fine-tuned) | cls (the class token)
    batch_size: int


@dataclass(frozen=True)
class TrainConfig:
    tasks: tuple[str, ...]
    views: tuple[str, ...]
    model: str
    model_kwargs: dict[str, Any]
    window: int
    stride: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    clip_grad: float
    feature_noise: float
    track_features: str  # raw | deviation | both: each stream as is, minus its track mean, or both
    modalities: tuple[str, ...]  # beside the face: audio (per-frame stream), text (per-video vector)
    scenes: int  # seed 004's scene ensemble: one model per brightness subset of training tracks (0 = off)
    epoch_ensemble: int  # seed 001's epoch ensemble: the last n epochs' models, outputs averaged (<= 1 = off)
    class_balance: bool
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class AudioConfig:
    extractor: str  # pipeline.audio.features.AUDIO_FEATURES: logmel_stats | vggish
    vggish_weights: str  # torchvggish's vggish-10086976.pth (extractor vggish); never downloaded
    vggish_pca: str  # its PCA parameters file ("" = raw 128-d embeddings)


@dataclass(frozen=True)
class TextConfig:
    model: str  # a sentence-transformers folder; "" = the packaged all-MiniLM-L6-v2


@dataclass(frozen=True)
class SmoothingSpec:
    """One smoothing candidate: "none", "window:<frames>" or "gaussian:<sigma in frames>"."""

    method: str
    amount: float = 0.0

    @classmethod
    def parse(cls, text: str) -> SmoothingSpec:
        method, _, amount = str(text).partition(":")
        if method == "none" and not amount:
            return cls("none")
        if method not in ("window", "gaussian") or not amount:
            raise ValueError(f"'{text}': expected none, window:<frames> or gaussian:<sigma>")
        value = float(amount)
        if method == "window" and (value < 1 or value != int(value)):
            raise ValueError(f"'{text}': a window width is a whole number of frames >= 1")
        if method == "gaussian" and value <= 0:
            raise ValueError(f"'{text}': a Gaussian sigma must be > 0 frames")
        return cls(method, value)

    def __str__(self) -> str:
        if self.method == "none":
            return "none"
        amount = int(self.amount) if self.method == "window" else self.amount
        return f"{self.method}:{amount}"


@dataclass(frozen=True)
class SmoothConfig:
    candidates: dict[str, tuple[str, ...]]  # task -> specs; the best on the inner validation fold is used
    fill_faceless: bool = (
        True  # outputs of faceless frames taken from the nearest face frame first (seed 004)
    )

    def specs(self, task: str) -> list[SmoothingSpec]:
        return [SmoothingSpec.parse(text) for text in self.candidates.get(task, ("none",))]


@dataclass(frozen=True)
class EvaluateConfig:
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class SubmitConfig:
    splits: tuple[str, ...]  # the tracks predicted for submission files (the demo's stand-in test set)


@dataclass(frozen=True)
class Config:
    """All of params.yaml, one attribute per section (the section names are the stage names)."""

    data: DataConfig
    demo: DemoConfig
    frames: FramesConfig
    faces: FacesConfig
    pretrain: PretrainConfig
    folds: FoldsConfig
    finetune: FinetuneConfig
    features: FeaturesConfig
    audio: AudioConfig
    text: TextConfig
    train: TrainConfig
    smooth: SmoothConfig
    evaluate: EvaluateConfig
    submit: SubmitConfig


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint (int, float, bool, str, tuple[X, ...], dict[str, X])."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r} (write 3.0e-4, not 3e-4)")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item = typing.get_args(hint)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported type {hint}")


def build_section(cls: type, name: str, values: Any, source: str = "params.yaml") -> Any:
    """Build one section's dataclass from its mapping; unknown, missing or mistyped keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    expected = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(expected))
    missing = [key for key in expected if key not in values]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in section '{name}' "
            f"(expected: {', '.join(expected)})"
        )
    if missing:
        raise ConfigError(f"{source}: section '{name}' is missing key(s) {', '.join(missing)}")
    kwargs = {key: _convert(values[key], hints[key], f"{source}: {name}.{key}") for key in expected}
    return cls(**kwargs)


def config_from_dict(params: dict[str, Any], source: str = "params.yaml") -> Config:
    """Build and check the whole config from a parsed params mapping."""
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections")
    unknown = sorted(set(params) - set(SECTIONS))
    missing = [name for name in SECTIONS if name not in params]
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {', '.join(unknown)} (expected: {', '.join(SECTIONS)})"
        )
    if missing:
        raise ConfigError(f"{source}: missing section(s) {', '.join(missing)}")
    sections = {name: build_section(cls, name, params[name], source) for name, cls in SECTIONS.items()}
    config = Config(**sections)
    check(config, source)
    return config


def load_config(path: Path | str = PARAMS_FILE) -> Config:
    """Read, build and check params.yaml (see the module docstring)."""
    path = Path(path)
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    return config_from_dict(params, str(path))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check(config: Config, source: str = "params.yaml") -> None:
    """Checks within and across sections; each failure names the keys involved."""
    produced = set(config.faces.views)
    _require(
        config.frames.label_tolerance >= 0,
        f"{source}: frames.label_tolerance must be >= 0, got {config.frames.label_tolerance}",
    )
    _require(
        config.faces.crop_size > 0, f"{source}: faces.crop_size must be > 0, got {config.faces.crop_size}"
    )
    _require(
        config.faces.source in FACE_SOURCES,
        f"{source}: faces.source must be one of {', '.join(FACE_SOURCES)}, got {config.faces.source!r}",
    )
    for key, views in (("pretrain.views", config.pretrain.views), ("finetune.views", config.finetune.views)):
        _require(bool(views), f"{source}: {key} is empty")
        _require(len(set(views)) == len(views), f"{source}: {key} lists a view twice: {list(views)}")
        for view in views:
            _require(
                view in produced,
                f"{source}: {key} has '{view}', not produced by faces.views {sorted(produced)}",
            )
    for view in config.features.views:
        _require(
            view in config.finetune.views,
            f"{source}: features.views has '{view}', but no encoder is fine-tuned on it "
            f"(finetune.views {list(config.finetune.views)})",
        )
    _check_encoder_sections(config, source)
    for view in config.train.views:
        _require(
            view in config.features.views or view == GEOMETRY_STREAM,
            f"{source}: train.views has '{view}', not in features.views {list(config.features.views)} "
            f"(nor the geometry stream '{GEOMETRY_STREAM}')",
        )
    for modality in config.train.modalities:
        _require(
            modality in ("audio", "text"),
            f"{source}: train.modalities has '{modality}'; known: audio, text",
        )
    for key, names in (
        ("finetune.tasks", config.finetune.tasks),
        ("train.tasks", config.train.tasks),
        ("evaluate.tasks", config.evaluate.tasks),
        ("smooth.candidates", tuple(config.smooth.candidates)),
    ):
        for name in names:
            _require(name in TASKS, f"{source}: {key} has unknown task '{name}' (known: {', '.join(TASKS)})")
        _require(len(set(names)) == len(names), f"{source}: {key} lists a task twice: {list(names)}")
    _require(bool(config.train.tasks), f"{source}: train.tasks is empty")
    for name in config.evaluate.tasks:
        _require(name in config.train.tasks, f"{source}: evaluate.tasks has '{name}', not in train.tasks")
    for name, specs in config.smooth.candidates.items():
        _require(bool(specs), f"{source}: smooth.candidates.{name} is empty (use [none])")
        for text in specs:
            try:
                SmoothingSpec.parse(text)
            except ValueError as error:
                raise ConfigError(f"{source}: smooth.candidates.{name}: {error}") from None
    train = config.train
    _require(
        train.window >= 1 and 1 <= train.stride <= train.window,
        f"{source}: need 1 <= train.stride <= train.window, got window={train.window}, stride={train.stride}",
    )
    _require(bool(train.seeds), f"{source}: train.seeds is empty")
    _require(
        train.track_features in ("raw", "deviation", "both"),
        f"{source}: train.track_features must be raw, deviation or both, got '{train.track_features}'",
    )
    _require(len(set(train.seeds)) == len(train.seeds), f"{source}: train.seeds repeats a seed")
    for section in (config.pretrain, config.finetune, train):
        name = type(section).__name__.removesuffix("Config").lower()
        if section is config.pretrain and config.pretrain.init:
            _require(section.epochs >= 0, f"{source}: pretrain.epochs must be >= 0")
        else:
            _require(
                section.epochs >= 1,
                f"{source}: {name}.epochs must be >= 1"
                + (
                    " (0 skips pretraining only with a pretrain.init checkpoint)"
                    if name == "pretrain"
                    else ""
                ),
            )
        _require(section.batch_size >= 1, f"{source}: {name}.batch_size must be >= 1")
        _require(section.lr > 0, f"{source}: {name}.lr must be > 0")
    _check_ranges(config, source)
    _require(config.finetune.accumulation >= 1, f"{source}: finetune.accumulation must be >= 1")
    _require(config.pretrain.accumulation >= 1, f"{source}: pretrain.accumulation must be >= 1")
    _require(config.finetune.frozen_blocks >= 0, f"{source}: finetune.frozen_blocks must be >= 0")
    _require(0 <= config.finetune.ema_decay < 1, f"{source}: finetune.ema_decay must be in [0, 1)")
    _require(0 < config.pretrain.mask_ratio < 1, f"{source}: pretrain.mask_ratio must be in (0, 1)")
    check_runs(config.folds.runs, source)


# Fine-tuning recipes (pipeline.training.finetune builds each one's model).
FINETUNE_RECIPES = ("plain", "cotex", "emma", "chain")
# Key layouts of encoder checkpoints (pipeline.models.checkpoints.LAYOUTS, plus "auto": detected).
CHECKPOINT_LAYOUTS = ("auto", "timm", "mae_face", "vitmae_hf")
FEATURE_POOLS = ("mean", "cls")


def _check_encoder_sections(config: Config, source: str) -> None:
    """pretrain / finetune / features knobs that depend on each other."""
    pre, fine = config.pretrain, config.finetune
    _require(
        pre.init_layout in CHECKPOINT_LAYOUTS,
        f"{source}: pretrain.init_layout must be one of {', '.join(CHECKPOINT_LAYOUTS)}, "
        f"got '{pre.init_layout}'",
    )
    _require(
        fine.recipe in FINETUNE_RECIPES,
        f"{source}: finetune.recipe must be one of {', '.join(FINETUNE_RECIPES)}, got '{fine.recipe}'",
    )
    _require(
        config.features.pool in FEATURE_POOLS,
        f"{source}: features.pool must be one of {', '.join(FEATURE_POOLS)}, got '{config.features.pool}'",
    )
    image_augment = {
        "crop_margin": fine.crop_margin,
        "colour_jitter": fine.colour_jitter,
        "mixup_alpha": fine.mixup_alpha,
        "cutmix_alpha": fine.cutmix_alpha,
    }
    used = [f"finetune.{k}" for k, v in image_augment.items() if v > 0]
    _require(
        not (used and fine.frozen_blocks > 0),
        f"{source}: {', '.join(used)} change the images, so every block must see them: set "
        f"finetune.frozen_blocks to 0 (it is {fine.frozen_blocks}; frozen blocks reuse cached tokens)",
    )
    if fine.recipe == "emma":
        for name in ("expr", "au", "va"):
            _require(name in fine.tasks, f"{source}: finetune.recipe emma needs '{name}' in finetune.tasks")
        _require(
            "face" in config.faces.views,
            f"{source}: finetune.recipe emma runs the expression CNN on the face view: "
            "add 'face' to faces.views",
        )


# (section, key, lowest, highest), bounds included: value ranges checked at load time.
# Where the faces stage takes faces from (stages/faces.py).
FACE_SOURCES = ("video", "cropped_aligned")

RANGES: tuple[tuple[str, str, float, float], ...] = (
    ("demo", "n_identities", 2, float("inf")),
    ("demo", "videos_per_identity", 1, float("inf")),
    ("demo", "two_person_videos", 0, float("inf")),
    ("demo", "frames_per_video", 1, float("inf")),
    ("demo", "frame_width", 1, float("inf")),
    ("demo", "frame_height", 1, float("inf")),
    ("demo", "face_box", 1, float("inf")),
    ("demo", "audio_rate", 1, float("inf")),
    ("demo", "frames_jitter", 0, 1),
    ("demo", "val_share", 0, 1),
    ("demo", "task_drop_share", 0, 1),
    ("demo", "no_face_share", 0, 1),
    ("demo", "blur_share", 0, 1),
    ("demo", "avi_share", 0, 1),
    ("faces", "detect_every", 1, float("inf")),
    ("faces", "max_faces", 1, float("inf")),
    ("faces", "min_iou", 0.01, 0.99),
    ("faces", "max_gap", 0, float("inf")),
    ("faces", "min_frames", 1, float("inf")),
    ("faces", "min_face_size", 0, float("inf")),
    ("faces", "min_sharpness", 0, float("inf")),
    ("pretrain", "frame_stride", 1, float("inf")),
    ("pretrain", "decoder_dim", 1, float("inf")),
    ("pretrain", "decoder_depth", 1, float("inf")),
    ("pretrain", "weight_decay", 0, float("inf")),
    ("pretrain", "warmup_epochs", 0, float("inf")),
    ("finetune", "frame_stride", 1, float("inf")),
    ("finetune", "weight_decay", 0, float("inf")),
    ("finetune", "warmup_epochs", 0, float("inf")),
    ("finetune", "layer_decay", 0, 1),
    ("finetune", "drop_path", 0, 1),
    ("finetune", "clip_grad", 0, float("inf")),
    ("finetune", "crop_margin", 0, 1),
    ("finetune", "colour_jitter", 0, 1),
    ("finetune", "mixup_alpha", 0, float("inf")),
    ("finetune", "cutmix_alpha", 0, float("inf")),
    ("finetune", "cotex_mask_ratio", 0, 0.95),
    ("finetune", "cotex_weight", 0, float("inf")),
    ("pretrain", "crop_scale_min", 0.05, 1),
    ("features", "batch_size", 1, float("inf")),
    ("train", "weight_decay", 0, float("inf")),
    ("train", "warmup_epochs", 0, float("inf")),
    ("train", "clip_grad", 0, float("inf")),
    ("train", "feature_noise", 0, float("inf")),
)


def _check_ranges(config: Config, source: str) -> None:
    for section, key, low, high in RANGES:
        value = getattr(getattr(config, section), key)
        _require(
            low <= value <= high,
            f"{source}: {section}.{key} must be in [{low:g}, {high:g}], got {value}",
        )
    _require(config.finetune.layer_decay > 0, f"{source}: finetune.layer_decay must be > 0")
    _require(config.finetune.drop_path < 1, f"{source}: finetune.drop_path must be < 1")
    _require(
        all(fps > 0 for fps in config.demo.fps_choices) and bool(config.demo.fps_choices),
        f"{source}: demo.fps_choices must list frame rates > 0, got {list(config.demo.fps_choices)}",
    )


def check_runs(runs: tuple[str, ...], source: str = "params.yaml") -> None:
    """folds.runs: fold_0..fold_{k-1} with k >= 3 (test, inner validation and training folds), and
    optionally "official", each once."""
    folds = sorted(int(m.group(1)) for run in runs if (m := RUN_PATTERN.match(run)))
    others = [run for run in runs if not RUN_PATTERN.match(run) and run != OFFICIAL_RUN]
    _require(not others, f"{source}: folds.runs has {others}: expected fold_<k> names and '{OFFICIAL_RUN}'")
    _require(len(set(runs)) == len(runs), f"{source}: folds.runs lists a run twice: {list(runs)}")
    _require(
        folds == list(range(len(folds))),
        f"{source}: folds.runs must name fold_0..fold_<k-1> without gaps, got {list(runs)}",
    )
    _require(
        len(folds) >= 3 or not folds,
        f"{source}: folds.runs needs at least 3 folds (test, inner validation, training), got {len(folds)}",
    )
    _require(bool(runs), f"{source}: folds.runs is empty")


def section_keys() -> dict[str, list[str]]:
    """Section -> its keys, as the dataclasses define them (kept in step with params.yaml and dvc.yaml)."""
    return {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
