"""Per-track sequences for sequence models: named feature streams from the Parquet cache, labels,
and predictions tables.

The cache holds one row per (frame, view); `load_streams` joins the views of one track lazily, one named
stream per view, so adding a view or a modality never re-extracts the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import artifacts
from pipeline.datasets.labels import complete_labels
from pipeline.faces.table import nearest_usable
from pipeline.tasks.definitions import DERIVED_TARGETS, TASKS, Task, get_tasks
from pipeline.tasks.kinds import behaviour

# Features come out of a LayerNorm-ed ViT (values of order 1-10); anything this large is corrupt, and one
# such value would turn a whole track's standardised windows into NaN.
FEATURE_LIMIT = 1.0e4
FEATURE_COLUMNS = ("frame", "view", "has_face", "embedding")
PRIOR = "prior"
# Named inputs that do not come from the face (train.modalities): a per-frame audio stream and a per-video
# text vector. Whether a frame "has a face" is decided by the other (visual) streams only.
AUDIO_STREAM = "audio"
TEXT_CLIP = "text"
MODALITIES = (AUDIO_STREAM, TEXT_CLIP)


class FeatureError(ValueError):
    """A feature table that cannot be used as it is (names the file, view and frame)."""


@dataclass
class TrackSequence:
    """Everything a sequence model sees of one track.

    Attributes:
        track: track name.
        streams: name -> [T, D] float32 per-frame inputs (frames without a face filled from neighbours).
        masks: name -> [T] bool, True where the stream was really observed (a face was found).
        clips: name -> [D] float32 per-clip inputs (audio or text embeddings).
        targets: task -> [T] or [T, C] targets with the task's invalid marker on unlabelled frames.
    """

    track: str
    streams: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    clips: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(next(iter(self.streams.values())))

    @property
    def face_masks(self) -> list[np.ndarray]:
        """[T] bool masks of the visual streams (the audio stream's mask says where there is sound)."""
        return [mask for name, mask in self.masks.items() if name != AUDIO_STREAM]

    @property
    def faceless(self) -> bool:
        """True when no visual stream observed a face in any frame (nothing to learn from or predict with)."""
        return bool(self.face_masks) and not any(mask.any() for mask in self.face_masks)

    def sources(self) -> np.ndarray:
        """[T] str per frame: "face" (a stream saw a face), "filled" (features taken from the nearest frame
        with a face) or "prior" (the track never shows a face: its outputs are the training prior)."""
        if self.faceless:
            return np.full(self.n_frames, PRIOR, dtype=object)
        seen = np.logical_or.reduce(self.face_masks) if self.face_masks else None
        if seen is None:
            return np.full(self.n_frames, "face", dtype=object)
        return np.where(seen, "face", "filled").astype(object)


def fill_missing(features: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Replace frames without a face by the nearest frame with one (seed 004's adjacent-frame rule).

    Args:
        features: [T, D]; rows where `has_face` is False are ignored.
        has_face: [T] bool.

    Returns:
        [T, D] float32; all zeros if the track has no face at all.
    """
    features = np.asarray(features, dtype=np.float32)
    nearest = nearest_usable(has_face)  # the face table's fill_from rule, ties to the earlier frame
    if len(nearest) and nearest[0] < 0:
        return np.zeros_like(features)
    return features[nearest]


def _check_table(table: pl.DataFrame, path: Path) -> None:
    missing = [column for column in FEATURE_COLUMNS if column not in table.columns]
    if missing:
        raise FeatureError(
            f"{path}: missing column(s) {missing}; a feature table has {', '.join(FEATURE_COLUMNS)} "
            f"(got {table.columns})"
        )
    embedding = table.schema["embedding"]
    if not isinstance(embedding, pl.Array) or not embedding.inner.is_float():
        raise FeatureError(f"{path}: column 'embedding' must be a fixed-size float array, got {embedding}")
    if table.schema["has_face"] != pl.Boolean:
        raise FeatureError(f"{path}: column 'has_face' must be boolean, got {table.schema['has_face']}")


def _check_values(values: np.ndarray, frames: np.ndarray, path: Path, view: str) -> None:
    """values [M, D] of the frames with a face: finite and of sane magnitude."""
    bad = ~np.isfinite(values) | (np.abs(values) > FEATURE_LIMIT)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise FeatureError(
            f"{path}: view '{view}', frame {int(frames[row])}: embedding[{int(column)}] = "
            f"{values[row, column]} ({int(bad.any(axis=1).sum())} frame(s) affected); features must be "
            f"finite and within +-{FEATURE_LIMIT:g}. Re-extract them (dvc repro features) or check the "
            "encoder."
        )


def load_streams(path: Path, views: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read and check one track's feature table: one stream per view.

    Checked: the schema, one row per frame 0..T-1 for every view, an embedding on every frame with a face,
    finite values of sane magnitude (`FEATURE_LIMIT`); a failure raises `FeatureError` naming the file,
    view and frame.

    Embeddings may be stored as any float type (the cache writes float16); they are returned as float32.

    Returns:
        streams: view -> [T, D] float32 with missing faces filled from neighbours;
        masks: view -> [T] bool (True where the view had a face).
    """
    table = pl.read_parquet(path)
    _check_table(table, path)
    streams, masks = {}, {}
    for view in views:
        rows = table.filter(pl.col("view") == view).sort("frame")
        if rows.height == 0:
            raise FeatureError(
                f"{path}: no features for view '{view}' (has: {table['view'].unique().sort().to_list()})"
            )
        frames = rows["frame"].to_numpy()
        if not np.array_equal(frames, np.arange(rows.height)):
            wrong = int(np.flatnonzero(frames != np.arange(rows.height))[0])
            raise FeatureError(
                f"{path}: view '{view}' must have one row per frame 0..{rows.height - 1}; "
                f"row {wrong} holds frame {int(frames[wrong])} (a duplicate or a gap)"
            )
        mask = rows["has_face"].to_numpy()
        null = rows["embedding"].is_null().to_numpy() & mask
        if null.any():
            raise FeatureError(
                f"{path}: view '{view}', frame {int(frames[null][0])}: has_face but no embedding"
            )
        dim = rows["embedding"].dtype.shape[0]
        values = np.zeros((rows.height, dim), dtype=np.float32)
        if mask.any():
            # [M, D] as stored (float16 since the cache went half precision), read as float32
            observed = rows.filter(pl.col("has_face"))["embedding"].to_numpy().astype(np.float32)
            _check_values(observed, frames[mask], path, view)
            values[mask] = observed
        streams[view], masks[view] = fill_missing(values, mask), mask
    return streams, masks


def check_widths(sequences: list[TrackSequence], paths: dict[str, Path]) -> None:
    """Every track must give each stream the same width (one encoder per run); names the odd file."""
    if not sequences:
        return
    first = sequences[0]
    for sequence in sequences[1:]:
        for name, values in sequence.streams.items():
            expected = first.streams[name].shape[1]
            if values.shape[1] != expected:
                raise FeatureError(
                    f"{paths.get(sequence.track, sequence.track)}: stream '{name}' has width "
                    f"{values.shape[1]}, but {paths.get(first.track, first.track)} has {expected}; "
                    "all tracks of a run must come from one encoder (re-extract: dvc repro features)"
                )


def present_tasks(frames_dir: Path, names: list[str] | tuple[str, ...], key: str) -> list[Task]:
    """The tasks of `names` that have labels under data.root (tracks.parquet); a note for the others.

    A root may hold any subset of the tasks: the others are skipped with a message instead of training on
    labels that are not there.

    Raises:
        ValueError: none of the tasks has labels.
    """
    tracks = pl.read_parquet(artifacts.tracks_table(frames_dir))
    labelled = {task for value in tracks["tasks"].to_list() for task in value.split(",") if task}
    labelled |= {name for name, task in TASKS.items() if set(task.derived_from) & labelled}
    absent = [name for name in names if name not in labelled]
    if absent:
        print(f"note: {key} {absent}: no labels under data.root, so skipped (labelled: {sorted(labelled)})")
    present = [name for name in names if name in labelled]
    if not present:
        raise ValueError(
            f"{key} {list(names)}: none of these tasks has labels under data.root "
            f"({artifacts.tracks_table(frames_dir)} lists {sorted(labelled) or 'none'})"
        )
    return get_tasks(present)


TRACK_FEATURES = ("raw", "deviation", "both")


def track_features(features: np.ndarray, has_face: np.ndarray, mode: str) -> np.ndarray:
    """The per-frame features a sequence model sees: raw, deviation from the track mean, or both.

    The track mean is mostly who the person is (and the scene); the deviation is mostly what the face
    is doing, so subject-independent models lean on it. Uses no labels, so it is the same at test time.

    Args:
        features: [T, D]; has_face: [T] bool (the mean is taken over frames with a face).
        mode: "raw" (as is), "deviation" (minus the track mean) or "both" (concatenated).

    Returns:
        [T, D] float32, or [T, 2 * D] for "both" (the features, then their deviation).
    """
    if mode not in TRACK_FEATURES:
        raise ValueError(f"track features must be one of {TRACK_FEATURES}, got '{mode}'")
    mean = features[has_face].mean(axis=0) if has_face.any() else np.zeros(features.shape[1], np.float32)
    parts = {"raw": [features], "deviation": [features - mean], "both": [features, features - mean]}[mode]
    joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return joined.astype(np.float32, copy=False)


def label_arrays(labels: pl.DataFrame, tasks: list[Task]) -> dict[str, np.ndarray]:
    """Targets per task from a labels table (one row per frame); a task whose columns the table lacks is
    all invalid (the track has no labels for it)."""
    out = {}
    for task in tasks:
        if task.derived_from:  # source columns a table lacks are unlabelled for their task
            values = complete_labels(labels.select([c for c in task.columns if c in labels.columns]))
            values = DERIVED_TARGETS[task.name](values.select(task.columns).to_numpy())
            out[task.name] = behaviour(task).targets_from(values, task.num_outputs)
        elif all(column in labels.columns for column in task.columns):
            values = labels.select(task.columns).to_numpy()
            out[task.name] = behaviour(task).targets_from(values, task.num_outputs)
        else:
            out[task.name] = behaviour(task).empty_targets(labels.height, task.num_outputs, task.invalid)
    return out


def crop_targets(index: pl.DataFrame, frames_dir: Path, tasks: list[Task]) -> dict[str, np.ndarray]:
    """Targets of face crops listed by (track, frame) rows (as `pipeline.faces.crops.gather_crops` gives)."""
    parts = []
    for track, rows in index.group_by("track", maintain_order=True):
        labels = label_arrays(pl.read_parquet(artifacts.labels_table(frames_dir, track[0])), tasks)
        frames = rows["frame"].to_numpy()
        parts.append({name: values[frames] for name, values in labels.items()})
    return {task.name: np.concatenate([p[task.name] for p in parts]) for task in tasks}


def load_track(
    track: str,
    features_path: Path | dict[str, Path],
    labels_path: Path,
    views: list[str],
    tasks: list[Task],
    track_feature_mode: str,
) -> TrackSequence:
    """One track's named streams and targets, aligned by decoded frame.

    Args:
        features_path: the feature table holding every view, or view -> table (encoder views come from
            the run's features, `landmarks` from the geometry cache).
    """
    paths = features_path if isinstance(features_path, dict) else dict.fromkeys(views, features_path)
    streams, masks = {}, {}
    for path in dict.fromkeys(paths[view] for view in views):  # each table read once, views in order
        got = load_streams(path, [view for view in views if paths[view] == path])
        streams |= got[0]
        masks |= got[1]
    streams, masks = {v: streams[v] for v in views}, {v: masks[v] for v in views}
    lengths = {view: len(values) for view, values in streams.items()}
    if len(set(lengths.values())) > 1:
        raise FeatureError(
            f"{track}: the views have different frame counts {lengths} "
            f"({', '.join(str(paths[v]) for v in views)}); re-extract the stale one"
        )
    streams = {
        name: track_features(values, masks[name], track_feature_mode) for name, values in streams.items()
    }
    targets = label_arrays(pl.read_parquet(labels_path), tasks)
    sequence = TrackSequence(track, streams, masks, {}, targets)
    for name, values in targets.items():
        if len(values) != sequence.n_frames:
            raise ValueError(
                f"{track}: {sequence.n_frames} feature rows in {paths[views[0]]} but {len(values)} label "
                f"rows for {name} in {labels_path}"
            )
    return sequence


def output_columns(task: Task) -> list[str]:
    return [f"{task.name}_{i}" for i in range(task.num_outputs)]


def predictions_table(
    track: str, outputs: dict[str, np.ndarray], tasks: list[Task], sources: np.ndarray | None = None
) -> pl.DataFrame:
    """One row per frame: `track`, `frame`, `source` (`TrackSequence.sources`: face / filled / prior) and
    `<task>_<i>` columns (probabilities or values)."""
    n_frames = len(next(iter(outputs.values())))
    columns: dict[str, object] = {"track": [track] * n_frames, "frame": np.arange(n_frames, dtype=np.int32)}
    columns["source"] = pl.Series(
        "source", sources if sources is not None else ["face"] * n_frames, pl.String
    )
    for task in tasks:
        for i, name in enumerate(output_columns(task)):
            columns[name] = outputs[task.name][:, i].astype(np.float32)
    return pl.DataFrame(columns)


def outputs_of(table: pl.DataFrame, task: Task) -> np.ndarray:
    """[N, C] outputs of one task from a predictions table."""
    return table.select(output_columns(task)).to_numpy()


def targets_of(table: pl.DataFrame, task: Task) -> np.ndarray:
    """Targets of one task from a table holding its label columns."""
    return behaviour(task).targets_from(table.select(task.columns).to_numpy(), task.num_outputs)
