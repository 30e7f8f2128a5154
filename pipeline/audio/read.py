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
RESAMPLE_BLOCK = 1 << 20  # input samples resampled per scipy call (22 s at 48 kHz)
SOUNDFILE_BLOCK = 1 << 18  # sample frames read from a sound file at a time


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
    """([N] float32 mono, rate), read in blocks into one array: reading all channels at once and then
    averaging held the track twice (30 min of 48 kHz stereo: 1 GB)."""
    try:
        with soundfile.SoundFile(path) as sound:
            rate, expected = int(sound.samplerate), max(int(sound.frames), 0)
            chunks = _Samples(expected)
            while True:
                block = sound.read(SOUNDFILE_BLOCK, dtype="float32", always_2d=True)  # [n, C] in [-1, 1)
                if not len(block):
                    break
                chunks.append(block.mean(axis=1))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot decode the audio ({error})") from error
    return chunks.samples(), rate


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
    (scipy's `resample_poly`, Kaiser window) with the rational factor reduced by the gcd.

    Long tracks go through in blocks of about `RESAMPLE_BLOCK` input samples, each with `_margin` samples
    of its neighbours on either side: an output sample only sees inputs within the filter's half-length,
    so the blocks give the same float64 sums, bit for bit, as one call, while scipy's float64 temporaries
    stay the size of a block (one call over 30 min at 48 kHz held 0.7 GB of them).
    """
    if rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} -> {target_rate}")
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target_rate:
        return samples
    g = gcd(int(rate), int(target_rate))
    up, down = int(target_rate) // g, int(rate) // g
    margin = _margin(up, down)
    step = max(RESAMPLE_BLOCK // down, 1) * down  # a multiple of `down`: blocks start on an output sample
    if len(samples) <= step + 2 * margin:
        return resample_poly(samples, up, down).astype(np.float32)
    n_out = -(-len(samples) * up // down)
    out = np.empty(n_out, np.float32)
    for first in range(0, len(samples), step):
        low, high = max(first - margin, 0), min(first + step + margin, len(samples))
        block = resample_poly(samples[low:high], up, down)
        start, stop = first * up // down, min((first + step) * up // down, n_out)
        skip = start - low * up // down  # the outputs of the left margin
        out[start:stop] = block[skip : skip + stop - start]
    return out


def _margin(up: int, down: int) -> int:
    """Input samples beyond a block's ends that its outputs can see: scipy's default filter reaches
    10 * max(up, down) upsampled samples either side; rounded up to a multiple of `down` (plus one more
    `down` to spare) so every block starts on an output sample."""
    reach = -(-10 * max(up, down) // up)
    return (reach // down + 2) * down
