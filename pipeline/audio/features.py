"""Per-video-frame audio features aligned by time stamp, a per-clip vector, and their Parquet cache.

Every extractor has one API: `extract(samples, rate, frame_times) -> [T, D] float32`, one row per video
frame, computed from the audio around that frame's time. `frame_audio_features` adds the coverage mask.

Extractors (`AUDIO_FEATURES`, name -> class; each class has `dim`):

- "logmel_stats" (default, no weights), D = 130: statistics of VGGish's 64 log-mel bands
  (`pipeline.audio.logmel`) over the 96 log-mel frames (0.96 s, one VGGish example) centred on the frame:
    [0:64]    mean of log(mel + 0.01) per band, band 0 = lowest (125 Hz) ... 63 = highest (7500 Hz);
    [64:128]  standard deviation of the same, per band (how much each band moves within the window);
    [128]     loudness: 10 log10(mean squared sample) over the window's 25 ms frames, in dB re full scale
              (a full-scale sine is -3 dB; digital silence -100 dB, the floor);
    [129]     spectral centroid in kHz: centre frequencies of the 64 mel bands weighted by their mean
              mel magnitude over the window (brightness; it rises with vocal effort, but it is not F0;
              0 for digital silence).
- "vggish", D = 128: VGGish embeddings (`pipeline.audio.vggish`; kwargs `weights`, `pca`, `hop_seconds`,
  `batch_size`, `device`) of 0.96 s examples cut every `hop_seconds` (0.24 s by default, so examples
  overlap by 3/4); each frame takes the embedding of the example whose centre is nearest its time.

Alignment: `frame_times` are seconds on the video's timeline; `start` is where audio sample 0 sits on it
(`pipeline.audio.read.read_audio_timed`). A frame is covered when start <= t < start + duration. Windows
are shifted to lie inside the audio, so frames near or beyond either end (and uncovered frames) get the
nearest complete window's features; audio shorter than one window uses all of it (VGGish: padded with
silence to one example). Audio shorter than one 25 ms STFT window gives zeros and no coverage.

Cache (`write_audio_table` / `read_audio_table`): one Parquet file per video, one row per frame: frame
int32, covered bool, embedding fixed-size float32 array [D]; the extractor's name in the schema metadata
(`EXTRACTOR_KEY`). Readers check one row per frame 0..T-1 and finite values, naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import resume
from pipeline.audio.logmel import (
    BLOCK_FRAMES,
    HOP_SAMPLES,
    HOP_SECONDS,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    band_centres,
    example_centres,
    frame_centres,
    hop_frames,
    log_mel,
    n_log_mel_frames,
    pad_to_example,
    params,
    vggish_examples,
)
from pipeline.audio.read import resample

DEFAULT_EXTRACTOR = "logmel_stats"
WINDOW_SECONDS = 0.96  # logmel_stats window: one VGGish example
LOUDNESS_FLOOR_DB = -100.0
EXTRACTOR_KEY = b"affectflow.audio_extractor"
AUDIO_COLUMNS = ("frame", "covered", "embedding")
WRITE_OPTIONS = {"compression": "zstd"}
STATS_BLOCK = 4096  # video frames whose window statistics are computed together


class AudioExtractor(Protocol):
    """What `frame_audio_features` needs of an extractor."""

    name: ClassVar[str]
    dim: ClassVar[int]

    def extract(self, samples: np.ndarray, rate: int, frame_times: np.ndarray) -> np.ndarray: ...


def window_starts(times: np.ndarray, n_frames: int, width: int) -> np.ndarray:
    """[T] first log-mel frame of the `width`-frame window centred on each time, shifted to lie inside
    frames 0..F-1 (so times near or past either end get the nearest complete window).

    Args:
        times: [T] seconds from audio sample 0.
        n_frames: F log-mel frames; width <= F.
    """
    # window centre = centre of frame s + (width - 1) / 2 frames
    first = frame_centres(1)[0]
    starts = np.round((np.asarray(times, np.float64) - first) / HOP_SECONDS - (width - 1) / 2)
    return np.clip(starts, 0, n_frames - width).astype(np.int64)


def _window_means(values: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """[F, ...] -> [T, ...] mean over frames starts..starts+width-1, by cumulative sums (float64)."""
    cumulative = np.cumsum(values, axis=0, dtype=np.float64)
    cumulative = np.concatenate([np.zeros((1, *values.shape[1:])), cumulative])
    return (cumulative[starts + width] - cumulative[starts]) / width


class LogMelStats:
    """The "logmel_stats" extractor: per-frame log-mel band means and deviations, loudness and spectral
    centroid over a centred window (layout in the module docstring)."""

    name: ClassVar[str] = "logmel_stats"
    dim: ClassVar[int] = 2 * params.NUM_MEL_BINS + 2  # 130

    def __init__(self, window_seconds: float = WINDOW_SECONDS) -> None:
        self.width = hop_frames(window_seconds)  # log-mel frames per window (96)

    def extract(self, samples: np.ndarray, rate: int, frame_times: np.ndarray) -> np.ndarray:
        """[N] mono at `rate`, [T] seconds from sample 0 -> [T, 130] float32."""
        samples = resample(samples, rate, SAMPLE_RATE)
        mel, _ = log_mel(samples, SAMPLE_RATE)  # [F, 64]
        out = np.zeros((len(frame_times), self.dim), np.float32)
        if len(mel) == 0 or len(frame_times) == 0:
            return out
        width = min(self.width, len(mel))
        starts = window_starts(frame_times, len(mel), width)
        frame_power = _frame_power(samples, len(mel))  # [F]
        # Blocks of video frames, each with cumulative sums over only the log-mel frames its windows
        # cover: float64 temporaries stay the size of a block, not of the video (and sums stay short).
        for first in range(0, len(starts), STATS_BLOCK):
            block = slice(first, first + STATS_BLOCK)
            out[block] = self._stats(mel, frame_power, starts[block], width)
        return out

    def _stats(self, mel: np.ndarray, frame_power: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
        """[F, 64] log-mel, [F] power, [B] window starts -> [B, 130] window statistics."""
        low, high = int(starts.min()), int(starts.max()) + width
        starts = starts - low
        piece = mel[low:high].astype(np.float64)
        mean = _window_means(piece, starts, width)  # [B, 64]
        var = _window_means(piece**2, starts, width) - mean**2
        power = _window_means(frame_power[low:high], starts, width)  # [B]
        magnitude = _window_means(np.maximum(np.exp(piece) - params.LOG_OFFSET, 0.0), starts, width)
        total = magnitude.sum(axis=1)
        centroid = (magnitude @ band_centres()) / np.maximum(total, 1e-12) / 1000.0
        bands = params.NUM_MEL_BINS
        out = np.empty((len(starts), self.dim), np.float32)
        out[:, :bands] = mean
        out[:, bands : 2 * bands] = np.sqrt(np.maximum(var, 0.0))  # cumulative sums can dip below 0
        out[:, 2 * bands] = np.maximum(10.0 * np.log10(power + 1e-30), LOUDNESS_FLOOR_DB)
        out[:, 2 * bands + 1] = np.where(total > 1e-6, centroid, 0.0)
        return out


def _frame_power(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """[N] 16 kHz samples -> [F] float64 mean squared sample of each log-mel frame's own 25 ms window (so
    loudness uses the same windows as the bands), computed in blocks of `BLOCK_FRAMES` frames."""
    power = np.empty(n_frames, np.float64)
    offsets = np.arange(BLOCK_FRAMES) * HOP_SAMPLES
    for first in range(0, n_frames, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, n_frames - first)
        piece = samples[first * HOP_SAMPLES : (first + count - 1) * HOP_SAMPLES + WINDOW_SAMPLES]
        squares = np.concatenate([[0.0], np.cumsum(piece.astype(np.float64) ** 2)])
        power[first : first + count] = (
            squares[offsets[:count] + WINDOW_SAMPLES] - squares[offsets[:count]]
        ) / WINDOW_SAMPLES
    return power


class VGGishFeatures:
    """The "vggish" extractor: the embedding of the VGGish example whose centre is nearest each frame.

    The model is loaded once, here (`load_vggish`: ~290 MB of weights), and reused for every clip."""

    name: ClassVar[str] = "vggish"
    dim: ClassVar[int] = params.EMBEDDING_SIZE  # 128

    def __init__(
        self,
        weights: Path | str | None = None,
        pca: Path | str | None = None,
        hop_seconds: float = 0.24,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        from pipeline.audio.vggish import load_vggish  # lazily: logmel_stats never builds a network

        self.model = load_vggish(weights, pca).to(device)
        self.hop_seconds = hop_seconds
        self.batch_size = batch_size

    def extract(self, samples: np.ndarray, rate: int, frame_times: np.ndarray) -> np.ndarray:
        """[N] mono at `rate`, [T] seconds from sample 0 -> [T, 128] float32."""
        from pipeline.audio.vggish import vggish_embed

        mel, _ = log_mel(samples, rate)
        if len(mel) == 0 or len(frame_times) == 0:
            return np.zeros((len(frame_times), self.dim), np.float32)
        examples = vggish_examples(pad_to_example(mel), self.hop_seconds)  # [E, 1, 96, 64]
        embeddings = vggish_embed(self.model, examples, self.batch_size)  # [E, 128]
        centres = example_centres(len(examples), self.hop_seconds)
        hop = hop_frames(self.hop_seconds) * HOP_SECONDS
        nearest = np.round((np.asarray(frame_times, np.float64) - centres[0]) / hop)
        return embeddings[np.clip(nearest, 0, len(examples) - 1).astype(np.int64)]


AUDIO_FEATURES: dict[str, type[LogMelStats] | type[VGGishFeatures]] = {
    LogMelStats.name: LogMelStats,
    VGGishFeatures.name: VGGishFeatures,
}


def make_extractor(name: str, **kwargs: Any) -> AudioExtractor:
    """Build the extractor `name` of `AUDIO_FEATURES` once (VGGish loads its weights here)."""
    if name not in AUDIO_FEATURES:
        raise ValueError(f"unknown audio features '{name}'; choose one of {sorted(AUDIO_FEATURES)}")
    return AUDIO_FEATURES[name](**kwargs)


def coverage(n_samples: int, rate: int, frame_times: np.ndarray, start: float = 0.0) -> np.ndarray:
    """[T] bool: frames whose time falls inside the audio, start <= t < start + n_samples / rate."""
    times = np.asarray(frame_times, np.float64)
    return (times >= start) & (times < start + n_samples / rate)


def frame_audio_features(
    extractor: str | AudioExtractor,
    samples: np.ndarray,
    rate: int,
    frame_times: np.ndarray,
    *,
    start: float = 0.0,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Audio features of each video frame.

    Args:
        extractor: a name in `AUDIO_FEATURES` (built here with `kwargs`) or an extractor built once by
            `make_extractor` (reuse it across videos: VGGish's weights load once).
        samples: [N] mono audio in [-1, 1] (`pipeline.audio.read.read_audio`).
        rate: its sample rate.
        frame_times: [T] time of each video frame in seconds on the video's timeline.
        start: time of audio sample 0 on that timeline (`read_audio_timed`'s third value).

    Returns:
        features: [T, D] float32; uncovered frames hold the nearest window's features (zeros when the
            audio is shorter than one 25 ms window).
        covered: [T] bool, True where the frame's time lies inside the audio (and the audio has at least
            one log-mel frame).
    """
    if isinstance(extractor, str):
        extractor = make_extractor(extractor, **kwargs)
    elif kwargs:
        raise ValueError(f"kwargs {sorted(kwargs)} only apply when the extractor is given by name")
    samples = np.asarray(samples, np.float32).reshape(-1)
    frame_times = np.asarray(frame_times, np.float64).reshape(-1)
    features = extractor.extract(samples, rate, frame_times - start)
    covered = coverage(len(samples), rate, frame_times, start)
    if n_log_mel_frames(len(samples), rate) == 0:  # not one 25 ms window: the features are zeros
        covered[:] = False
    return features.astype(np.float32, copy=False), covered


def clip_vector(features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """[T, D] per-frame features -> [D] float32 mean over the frames where `mask` [T] is True (all frames
    when None); zeros when no frame counts (a video without audio)."""
    features = np.asarray(features, np.float32)
    if mask is not None:
        features = features[np.asarray(mask, bool)]
    if len(features) == 0:
        return np.zeros(features.shape[1], np.float32)
    return features.mean(axis=0, dtype=np.float64).astype(np.float32)


# ---- Parquet cache --------------------------------------------------------------------------------------


class AudioTableError(ValueError):
    """An audio feature table that cannot be used as it is (names the file and the frame)."""


def audio_schema(dim: int, extractor: str) -> pa.Schema:
    """The schema of an audio feature table of width `dim`, with the extractor's name as metadata."""
    return pa.schema(
        [("frame", pa.int32()), ("covered", pa.bool_()), ("embedding", pa.list_(pa.float32(), dim))],
        metadata={EXTRACTOR_KEY: extractor.encode()},
    )


def write_audio_table(
    path: Path | str,
    frame: np.ndarray,
    features: np.ndarray,
    covered: np.ndarray,
    name: str,
    key: str | None = None,
) -> None:
    """Write one video's audio features, one row per frame, atomically (hidden sibling, then rename).

    Args:
        frame: [T] frame indices (0..T-1 for a table `read_audio_table` accepts).
        features: [T, D] float; stored as float32.
        covered: [T] bool.
        name: the extractor's name (stored in the schema metadata).
        key: a resume key (`pipeline.resume`) to commit with, or None.
    """
    path = Path(path)
    frame = np.asarray(frame)
    features = np.asarray(features, np.float32)
    covered = np.asarray(covered, bool)
    if features.ndim != 2 or frame.shape != (len(features),) or covered.shape != (len(features),):
        raise ValueError(
            f"{path}: need frame [T], features [T, D] and covered [T], got {list(frame.shape)}, "
            f"{list(features.shape)} and {list(covered.shape)}"
        )
    dim = features.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), dim)
    columns = [pa.array(frame.astype(np.int32)), pa.array(covered), embedding]
    table = pa.Table.from_arrays(columns, schema=audio_schema(dim, name))
    if key is not None:
        resume.commit_parquet(table, path, key, **WRITE_OPTIONS)
        return
    staging = path.with_name(f".{path.name}{resume.STAGING_SUFFIX}")
    pq.write_table(table, staging, **WRITE_OPTIONS)
    os.replace(staging, path)


def audio_table_extractor(path: Path | str) -> str | None:
    """The extractor name an audio table was written with (None when absent)."""
    value = (pq.read_schema(path).metadata or {}).get(EXTRACTOR_KEY)
    return value.decode() if value is not None else None


def read_audio_table(path: Path | str, extractor: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one video's audio features.

    Checked: the columns and their types, one row per frame 0..T-1, no null embedding, finite values and
    (when `extractor` is given) the extractor it was written with; a failure raises `AudioTableError`
    naming the file (and the frame).

    Returns:
        features: [T, D] float32; covered: [T] bool.
    """
    path = Path(path)
    try:
        table = pl.read_parquet(path)
        written_by = audio_table_extractor(path)
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as error:
        raise AudioTableError(f"{path}: cannot read the audio feature table ({error})") from error
    missing = [column for column in AUDIO_COLUMNS if column not in table.columns]
    if missing:
        raise AudioTableError(
            f"{path}: missing column(s) {missing}; an audio table has {', '.join(AUDIO_COLUMNS)} "
            f"(got {table.columns})"
        )
    embedding = table.schema["embedding"]
    if not isinstance(embedding, pl.Array) or not embedding.inner.is_float():
        raise AudioTableError(f"{path}: column 'embedding' must be a fixed-size float array, got {embedding}")
    if table.schema["covered"] != pl.Boolean:
        raise AudioTableError(f"{path}: column 'covered' must be boolean, got {table.schema['covered']}")
    if extractor is not None and written_by != extractor:
        raise AudioTableError(
            f"{path}: written by audio features '{written_by}', expected '{extractor}' (re-extract it)"
        )
    table = table.sort("frame")
    frames = table["frame"].to_numpy()
    if not np.array_equal(frames, np.arange(table.height)):
        wrong = int(np.flatnonzero(frames != np.arange(table.height))[0])
        raise AudioTableError(
            f"{path}: must have one row per frame 0..{table.height - 1}; row {wrong} holds frame "
            f"{int(frames[wrong])} (a duplicate or a gap)"
        )
    null = table["embedding"].is_null().to_numpy() | table["covered"].is_null().to_numpy()
    if null.any():
        raise AudioTableError(f"{path}: frame {int(frames[null][0])} has no embedding or no coverage flag")
    dim = embedding.shape[0]
    features = table["embedding"].to_numpy().astype(np.float32).reshape(table.height, dim)
    bad = ~np.isfinite(features)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise AudioTableError(
            f"{path}: frame {int(frames[row])}: embedding[{int(column)}] = {features[row, column]} "
            f"({int(bad.any(axis=1).sum())} frame(s) affected); audio features must be finite "
            "(re-extract them)"
        )
    return features, table["covered"].to_numpy().astype(bool)
