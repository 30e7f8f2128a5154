"""Read the audio of a sound file or of a video container as float32 mono samples.

Sound files (.wav, .flac, .ogg, .aif[f]) go through soundfile (libsndfile); everything else (video
containers .mp4/.avi/.mkv/.mov/.webm, and .mp3/.m4a/.aac) through PyAV, FFmpeg's library bindings (there is
no ffmpeg binary on the pipeline's machines). Channels are averaged to mono, as VGGish's own front end does.

Timing: a container's audio stream need not start with its video. `read_audio_timed` also returns where
the first sample sits on the video's timeline, in seconds from the video stream's start (the origin of the
frame timeline, `pipeline.datasets.video`); e.g. the fixture `face_noface.mov` has audio only from 2.43 s.
Pass that offset as `start` to `pipeline.audio.features` so audio lines up with video frames.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import av
import numpy as np
import soundfile
from scipy.signal import resample_poly

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff")  # libsndfile reads these; the rest: PyAV


class AudioError(ValueError):
    """Audio that cannot be used: no audio stream, undecodable, or empty (names the file)."""


def read_audio(path: Path | str) -> tuple[np.ndarray, int]:
    """Samples of a sound file or of the first audio stream of a video container.

    Returns:
        samples: [N] float32 mono (channel mean) in [-1, 1]; sample 0 is the first decoded sample.
        rate: samples per second (the file's own rate; `resample` to change it).

    Raises:
        FileNotFoundError: `path` does not exist.
        AudioError: no audio stream, nothing decodes, or not an audio/video file.
    """
    samples, rate, _ = read_audio_timed(path)
    return samples, rate


def read_audio_timed(path: Path | str) -> tuple[np.ndarray, int, float]:
    """`read_audio` plus `start`: the time of sample 0 in seconds from the start of the container's video
    stream (0.0 for a sound file, or a container without video: then from the container's start)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio or video file")
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        samples, rate = _read_soundfile(path)
        start = 0.0
    else:
        samples, rate, start = _read_container(path)
    if len(samples) == 0:
        raise AudioError(f"{path}: the audio holds no samples")
    # Lossy decoders (AAC, MP3) overshoot full scale a little; clipping keeps the documented range. In
    # place: a long sound track is the largest array here (30 min at 48 kHz: 345 MB).
    samples = np.asarray(samples, np.float32)
    return np.clip(samples, -1.0, 1.0, out=samples), rate, start


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # [N, C], ints scaled to [-1, 1)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot decode the audio ({error})") from error
    return data.mean(axis=1), int(rate)


def _read_container(path: Path) -> tuple[np.ndarray, int, float]:
    """Decode the first audio stream with PyAV: ([N] float32 mono, rate, start seconds)."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise AudioError(f"{path}: cannot open it as an audio or video container ({error})") from error
    with container:
        if not container.streams.audio:
            kinds = [stream.type for stream in container.streams] or ["none"]
            raise AudioError(f"{path}: the container has no audio stream (streams: {', '.join(kinds)})")
        stream = container.streams.audio[0]
        seconds = container.duration / av.time_base if container.duration else 0.0
        chunks: _Samples | None = None
        resampler = None
        rate = 0
        first_time = None
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    # The decoded rate, not the header's (HE-AAC headers can say half of it). Converting to
                    # planar float only; no rate or layout change, so nothing is filtered here.
                    rate = frame.sample_rate
                    first_time = frame.time
                    chunks = _Samples(int(seconds * rate * 1.01) + rate)  # 1 % and 1 s to spare
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))  # [C, n] planar -> [n]
            if resampler is not None:
                for out in resampler.resample(None):  # flush
                    chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as error:
            raise AudioError(f"{path}: cannot decode audio stream {stream.index} ({error})") from error
        if chunks is None or not chunks.count:
            raise AudioError(f"{path}: audio stream {stream.index} decodes to no samples")
        origin = _timeline_origin(container)
    samples = chunks.samples()
    start = (first_time if first_time is not None else origin) - origin
    return samples, rate, float(start)


class _Samples:
    """Decoded pieces appended into one growing array, first sized from the container's duration, so a
    long track is not held twice (as a list of pieces and their concatenation)."""

    def __init__(self, expected: int) -> None:
        self.buffer = np.empty(max(expected, 1), np.float32)
        self.count = 0

    def append(self, piece: np.ndarray) -> None:
        """piece: [n] mono samples."""
        end = self.count + len(piece)
        if end > len(self.buffer):  # the duration was missing or short: grow by half
            grown = np.empty(max(end, len(self.buffer) * 3 // 2), np.float32)
            grown[: self.count] = self.buffer[: self.count]
            self.buffer = grown
        self.buffer[self.count : end] = piece
        self.count = end

    def samples(self) -> np.ndarray:
        """[N] float32, the samples appended (a view when the buffer is nearly full, else a copy)."""
        if self.count >= 0.9 * len(self.buffer):
            return self.buffer[: self.count]
        return self.buffer[: self.count].copy()


def _timeline_origin(container: av.container.InputContainer) -> float:
    """Seconds where the frame timeline starts: the video stream's start, else the container's."""
    if container.streams.video:
        video = container.streams.video[0]
        if video.start_time is not None and video.time_base is not None:
            return float(video.start_time * video.time_base)
    if container.start_time is not None:
        return container.start_time / av.time_base
    return 0.0


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """[N] samples at `rate` -> [M] float32 at `target_rate` (M = ceil(N * target / rate)), polyphase FIR
    (scipy's `resample_poly`, Kaiser window) with the rational factor reduced by the gcd."""
    if rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} -> {target_rate}")
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target_rate:
        return samples
    g = gcd(int(rate), int(target_rate))
    return resample_poly(samples, int(target_rate) // g, int(rate) // g).astype(np.float32)
