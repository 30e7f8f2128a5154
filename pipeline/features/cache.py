"""Frozen-encoder features cached as Parquet: one row per (timeline frame, view), so temporal models
can change without re-extracting anything.

Storage (`feature_schema`, `WRITE_OPTIONS`): columns frame int32, view string, has_face bool, embedding
fixed-size list of float16 (null without a face); zstd, row groups of at most `ROW_GROUP_ROWS` rows, rows
frame-major (frame 0 of every view, then frame 1, ...), so a reader can stream windows of frames
(`pipeline.features.windows`). float16 keeps ~3 significant digits, plenty for LayerNorm-ed features of
order 1-10, at half the bytes; readers convert to float32.

Extraction (`extract_tracks`): each view's encoder is built once, the crops of all tracks stream through
full batches of `batch_size` (a batch spans track boundaries, so no track ends in a short batch), and each
track's table is committed as soon as its last row is out. Reading and preprocessing run in line with the
model: on a 2-core CPU the model's threads already fill both cores, and a thread preprocessing the next
batch made extraction ~10% slower in paired runs. A track's embeddings do not depend on its batch
neighbours (bitwise on the dev CPU; the tests allow float tolerance).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from pipeline import artifacts, resume
from pipeline.config import FEATURE_POOLS
from pipeline.faces.crops import track_crops
from pipeline.inference.images import to_tensor_batch
from pipeline.models.encoders import encoder_from_checkpoint, feature_dim, input_size, load_checkpoint
from pipeline.runtime import autocast, channels_last, configure_torch

ROW_GROUP_ROWS = 4096  # bounded row groups: readers stream a table a row group at a time
WRITE_OPTIONS = {"compression": "zstd", "row_group_size": ROW_GROUP_ROWS, "use_dictionary": ["view"]}
POOLS = FEATURE_POOLS  # features.pool
STORED_DTYPE = np.float16  # embeddings as stored (and so as every model trained on them saw them)


def as_stored(values: np.ndarray) -> np.ndarray:
    """float32 [..., D] as a reader of the cache gets them back: rounded through `STORED_DTYPE`. Features
    computed on the fly (`affectflow predict`) go through this, so models see what they were trained on."""
    with np.errstate(over="ignore"):
        return np.asarray(values).astype(STORED_DTYPE).astype(np.float32)


def feature_schema(dim: int) -> pa.Schema:
    """The one schema of a feature table with embeddings of width `dim`."""
    return pa.schema(
        [
            ("frame", pa.int32()),
            ("view", pa.string()),
            ("has_face", pa.bool_()),
            ("embedding", pa.list_(pa.float16(), dim)),
        ]
    )


def track_table(n_frames: int, embeddings: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """Rows for every timeline frame of every view, frame-major; frames without a face get a null embedding.

    Args:
        n_frames: T, timeline frames of the track.
        embeddings: view -> (frames [M] with a face, embeddings [M, D] float); every view has the same D.

    Returns:
        T * V rows in `feature_schema(D)`: (0, view 1), (0, view 2), ..., (T - 1, view V).
    """
    views = list(embeddings)
    dims = {view: values.shape[1] for view, (_, values) in embeddings.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"all views of a feature table need one embedding width, got {dims}")
    dim = dims[views[0]]
    has_face = np.zeros((n_frames, len(views)), dtype=bool)
    flat = np.zeros((n_frames, len(views), dim), dtype=STORED_DTYPE)
    for v, view in enumerate(views):
        frames, values = embeddings[view]
        has_face[frames, v] = True
        with np.errstate(over="ignore"):  # |x| > 65504 becomes inf, which readers reject, naming the frame
            flat[frames, v] = values  # float -> float16 here, the one place the cache rounds
    values = pa.FixedSizeListArray.from_arrays(
        pa.array(flat.reshape(-1)), dim, mask=pa.array(~has_face.reshape(-1))
    )
    columns = [
        pa.array(np.repeat(np.arange(n_frames, dtype=np.int32), len(views))),
        pa.array(np.tile(np.array(views, dtype=object), n_frames), pa.string()),
        pa.array(has_face.reshape(-1)),
        values,
    ]
    return pa.Table.from_arrays(columns, schema=feature_schema(dim))


def feature_table(n_frames: int, view: str, frames: np.ndarray, embeddings: np.ndarray) -> pa.Table:
    """`track_table` of one view: frames [M] with a face, embeddings [M, D]."""
    return track_table(n_frames, {view: (np.asarray(frames), np.asarray(embeddings))})


def write_feature_table(table: pa.Table, path: Path, key: str) -> None:
    """Commit one track's table atomically with its resume key (zstd, bounded row groups)."""
    resume.commit_parquet(table, path, key, **WRITE_OPTIONS)


# The code whose changes invalidate every cached feature table (the encoder, its preprocessing, the crops).
FEATURE_CODE = (
    "pipeline.faces.crops",
    "pipeline.features.cache",
    "pipeline.inference.images",
    "pipeline.models.encoders",
)


def track_key(encoders: dict[str, str], faces_key: str | None, n_frames: int, pool: str, code: str) -> str:
    """Resume key of one track's feature table: each view's encoder bytes (view -> sha256, in view
    order), the pooling, the track's face unit (its crops), its frame count and the feature code."""
    return resume.unit_key(
        {
            "encoders": encoders,
            "views": list(encoders),  # the row order of the table
            "pool": pool,
            "faces": faces_key,
            "n_frames": n_frames,
            "code": code,
        }
    )


def load_encoder(checkpoint: Path, device: str) -> nn.Module:
    """A frozen encoder in eval mode on the device, from one of our checkpoints."""
    return channels_last(encoder_from_checkpoint(load_checkpoint(checkpoint)).to(device).eval(), device)


def pool_features(encoder: nn.Module, x: torch.Tensor, pool: str) -> torch.Tensor:
    """[N, 3, H, W] -> [N, D]: "mean" is the encoder's own output (mean of the patch tokens after the
    final norm), "cls" the class token after the final norm."""
    if pool == "mean":
        return encoder(x)
    if pool == "cls":
        return encoder.forward_features(x)[:, 0]
    raise ValueError(f"pool must be one of {POOLS}, got '{pool}'")


@dataclass(frozen=True)
class TrackJob:
    """One track to extract: its name, timeline length and resume key."""

    track: str
    n_frames: int
    key: str


@dataclass
class TrackCrops:
    """A track's frames with a face per view; its crops follow in `CropBatch`es."""

    index: int
    frames: dict[str, np.ndarray]  # view -> [M_v] frames


@dataclass
class CropBatch:
    """One forward pass: `images` of one view, made of consecutive crop runs of one or more tracks."""

    view: str
    images: torch.Tensor  # [n, 3, H, W] preprocessed, on the device
    parts: list[tuple[int, int]]  # (track index, crops) in order, summing to n


def crop_stream(
    faces_dir: Path, tracks: list[str], sizes: dict[str, tuple[int, int]], batch_size: int, device: str
) -> Iterator[TrackCrops | CropBatch]:
    """Every track's `TrackCrops`, each followed by the full batches its crops complete, per view; the
    short remainder of each view comes last. Batches are read from the memory-mapped crops and
    preprocessed (`to_tensor_batch`) here.

    Args:
        sizes: view -> (H, W) input size of that view's encoder.
    """
    pending: dict[str, list[tuple[int, np.ndarray]]] = {view: [] for view in sizes}
    counts = dict.fromkeys(sizes, 0)

    def take(view: str, n: int) -> CropBatch:
        images, parts = [], []
        while n > 0:
            index, crops = pending[view][0]
            used = min(n, len(crops))
            images.append(crops[:used])  # reads the memmap
            parts.append((index, used))
            if used == len(crops):
                pending[view].pop(0)
            else:
                pending[view][0] = (index, crops[used:])
            n -= used
            counts[view] -= used
        x = to_tensor_batch(np.concatenate(images), device, size=sizes[view])
        return CropBatch(view, x, parts)

    for index, track in enumerate(tracks):
        frames = {}
        for view in sizes:
            frames[view], crops = track_crops(faces_dir, track, view)
            if len(crops):
                pending[view].append((index, crops))
                counts[view] += len(crops)
        yield TrackCrops(index, frames)
        for view in sizes:
            while counts[view] >= batch_size:
                yield take(view, batch_size)
    for view in sizes:
        if counts[view]:
            yield take(view, counts[view])


def shard_jobs(jobs: list[TrackJob], n_shards: int) -> list[list[TrackJob]]:
    """Split the jobs into at most `n_shards` non-empty shards of about equal frames: longest track first,
    each to the shard with the fewest frames so far."""
    shards: list[list[TrackJob]] = [[] for _ in range(min(n_shards, len(jobs)))]
    frames = [0] * len(shards)
    for job in sorted(jobs, key=lambda job: -job.n_frames):
        lightest = frames.index(min(frames))
        shards[lightest].append(job)
        frames[lightest] += job.n_frames
    return shards


def extract_shard(
    jobs: list[TrackJob],
    faces_dir: Path,
    checkpoints: dict[str, Path],
    out_dir: Path,
    pool: str,
    batch_size: int,
) -> int:
    """`extract_tracks` as a fan-out job in a process of its own, pinned to one GPU: it builds each view's
    encoder there from its checkpoint, so only paths travel to it."""
    device = configure_torch()
    encoders = {view: load_encoder(path, device) for view, path in checkpoints.items()}
    return extract_tracks(jobs, faces_dir, encoders, out_dir, pool=pool, batch_size=batch_size, device=device)


@torch.inference_mode()
def extract_tracks(
    jobs: list[TrackJob],
    faces_dir: Path,
    encoders: dict[str, nn.Module],
    out_dir: Path,
    *,
    pool: str,
    batch_size: int,
    device: str = "cpu",
) -> int:
    """Write `<out_dir>/<track>.parquet` for each job, committed atomically with its key as soon as its
    rows are complete; returns the number of rows written.

    Args:
        encoders: view -> encoder (built once by the caller, `load_encoder`), in the table's view order.
        pool: "mean" or "cls" (`pool_features`).
        batch_size: images per forward pass; batches span tracks, so only each view's last one is short.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got '{pool}'")
    if not jobs:
        return 0
    views = list(encoders)
    dim = feature_dim(next(iter(encoders.values())))
    for encoder in encoders.values():
        channels_last(encoder.to(device).eval(), device)
    sizes = {view: input_size(encoder) for view, encoder in encoders.items()}
    stream = crop_stream(faces_dir, [job.track for job in jobs], sizes, batch_size, device)
    frames: dict[int, dict[str, np.ndarray]] = {}  # track index -> view -> frames, until written
    outputs: dict[int, dict[str, list[np.ndarray]]] = {}  # track index -> view -> [n, D] chunks
    rows = 0

    def write_if_complete(index: int) -> None:
        nonlocal rows
        done = {view: sum(len(part) for part in outputs[index][view]) for view in views}
        if any(done[view] < len(frames[index][view]) for view in views):
            return
        embeddings = {
            view: (
                frames[index][view],
                np.concatenate(outputs[index][view]) if outputs[index][view] else np.zeros((0, dim)),
            )
            for view in views
        }
        job = jobs[index]
        table = track_table(job.n_frames, embeddings)
        write_feature_table(table, artifacts.feature_table(out_dir, job.track), job.key)
        rows += table.num_rows
        del frames[index], outputs[index]

    for item in stream:
        if isinstance(item, TrackCrops):
            frames[item.index] = item.frames
            outputs[item.index] = {view: [] for view in views}
            write_if_complete(item.index)  # a track without any face is complete at once
            continue
        with autocast(device):
            features = pool_features(encoders[item.view], item.images, pool).float().cpu().numpy()
        start = 0
        for index, count in item.parts:
            outputs[index][item.view].append(features[start : start + count])
            start += count
        for index in dict.fromkeys(index for index, _ in item.parts):
            write_if_complete(index)
    if frames:
        raise RuntimeError(f"features: tracks left incomplete: {[jobs[i].track for i in frames]}")
    return rows
