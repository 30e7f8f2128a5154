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


def read_audio_timed(path: Path | str, rate: int | None = None) -> tuple[np.ndarray, int, float]:
    """`read_audio` plus `start`: the time of sample 0 in seconds from the start of the container's video
    stream (0.0 for a sound file, or a container without video: then from the container's start).

    Args:
        rate: resample to this rate while decoding (`BlockResampler`: the same samples as `resample` over
            the whole track), so a long track is never held at its own rate (30 min at 48 kHz: 345 MB,
            against 115 MB at 16 kHz); None = the file's own rate.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio or video file")
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        samples, rate = _read_soundfile(path, rate)
        start = 0.0
    else:
        samples, rate, start = _read_container(path, rate)
    if len(samples) == 0:
        raise AudioError(f"{path}: the audio holds no samples")
    return samples, rate, start


def _clipped(piece: np.ndarray) -> np.ndarray:
    """[n] mono float32 in [-1, 1]: lossy decoders (AAC, MP3) overshoot full scale a little."""
    piece = np.asarray(piece, np.float32)
    return np.clip(piece, -1.0, 1.0, out=piece)


class _Decoded:
    """Mono pieces at the file's rate -> clipped, resampled to `target` when given, into one array."""

    def __init__(self, rate: int, target: int | None, seconds: float) -> None:
        self.rate = target or rate
        self.resampler = BlockResampler(rate, target) if target and target != rate else None
        self.samples = _Samples(int(seconds * self.rate * 1.01) + self.rate)  # 1 % and 1 s to spare
        self.fed = 0  # samples decoded, at the file's rate

    def append(self, piece: np.ndarray) -> None:
        piece = _clipped(piece)
        self.fed += len(piece)
        self.samples.append(self.resampler.feed(piece) if self.resampler else piece)

    def finish(self) -> np.ndarray:
        if self.resampler:
            self.samples.append(self.resampler.finish())
        return self.samples.samples()


def _read_soundfile(path: Path, target: int | None) -> tuple[np.ndarray, int]:
    """([N] float32 mono at `target` or the file's rate, that rate), read in blocks: reading all channels
    at once and then averaging held the track twice (30 min of 48 kHz stereo: 1 GB)."""
    try:
        with soundfile.SoundFile(path) as sound:
            decoded = _Decoded(int(sound.samplerate), target, max(int(sound.frames), 0) / sound.samplerate)
            while True:
                block = sound.read(SOUNDFILE_BLOCK, dtype="float32", always_2d=True)  # [n, C] in [-1, 1)
                if not len(block):
                    break
                decoded.append(block.mean(axis=1))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot decode the audio ({error})") from error
    return decoded.finish(), decoded.rate


def _read_container(path: Path, target: int | None) -> tuple[np.ndarray, int, float]:
    """Decode the first audio stream with PyAV: ([N] float32 mono at `target` or the decoded rate, that
    rate, start seconds)."""
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
        decoded: _Decoded | None = None
        resampler = None
        first_time = None
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    # The decoded rate, not the header's (HE-AAC headers can say half of it). Converting to
                    # planar float only; no rate or layout change, so nothing is filtered here.
                    first_time = frame.time
                    decoded = _Decoded(frame.sample_rate, target, seconds)
                    resampler = av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=frame.sample_rate
                    )
                for out in resampler.resample(frame):
                    decoded.append(out.to_ndarray().mean(axis=0))  # [C, n] planar -> [n]
            if resampler is not None:
                for out in resampler.resample(None):  # flush
                    decoded.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as error:
            raise AudioError(f"{path}: cannot decode audio stream {stream.index} ({error})") from error
        if decoded is None or not decoded.fed:
            raise AudioError(f"{path}: audio stream {stream.index} decodes to no samples")
        origin = _timeline_origin(container)
    start = (first_time if first_time is not None else origin) - origin
    return decoded.finish(), decoded.rate, float(start)


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
    (scipy's `resample_poly`, Kaiser window) with the rational factor reduced by the gcd; in blocks
    (`BlockResampler`), bit for bit what one scipy call gives."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} -> {target_rate}")
    if rate == target_rate:
        return samples
    resampler = BlockResampler(rate, target_rate)
    return np.concatenate([resampler.feed(samples), resampler.finish()])


class BlockResampler:
    """`resample` over a track that arrives in pieces, with bounded memory.

    The input goes through in blocks of about `RESAMPLE_BLOCK` samples, each with `_margin` samples of its
    neighbours on either side: an output sample only sees inputs within the filter's half-length, so the
    blocks give the same float64 sums, bit for bit, as one `resample_poly` call over the whole track,
    while scipy's float64 temporaries and the input held stay the size of a block (one call over 30 min
    at 48 kHz held 0.7 GB of them).
    """

    def __init__(self, rate: int, target_rate: int) -> None:
        if rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {rate} -> {target_rate}")
        g = gcd(int(rate), int(target_rate))
        self.up, self.down = int(target_rate) // g, int(rate) // g
        self.margin = _margin(self.up, self.down)
        self.step = max(RESAMPLE_BLOCK // self.down, 1) * self.down  # blocks start on an output sample
        self.first = 0  # the next block's first input sample
        self.total = 0  # input samples fed so far
        self.held = np.zeros(0, np.float32)  # input from `self.offset` on
        self.offset = 0
        self.pieces: list[np.ndarray] = []  # fed since `held` was last joined

    def feed(self, piece: np.ndarray) -> np.ndarray:
        """[n] more input -> the outputs now complete (possibly none)."""
        self.pieces.append(np.asarray(piece, np.float32))
        self.total += len(piece)
        done = []
        while self.first + self.step + self.margin <= self.total:
            done.append(self._block(self.first + self.step + self.margin, None))
        return np.concatenate(done) if done else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        """The remaining outputs (the track's end is zero-padded, as scipy pads it)."""
        n_out = -(-self.total * self.up // self.down)
        done = []
        while self.first < self.total:
            done.append(self._block(self.total, n_out))
        return np.concatenate(done) if done else np.zeros(0, np.float32)

    def _block(self, high: int, n_out: int | None) -> np.ndarray:
        if self.pieces:
            self.held = np.concatenate([self.held, *self.pieces])
            self.pieces = []
        low = max(self.first - self.margin, 0)
        block = resample_poly(self.held[low - self.offset : high - self.offset], self.up, self.down)
        start, stop = self.first * self.up // self.down, (self.first + self.step) * self.up // self.down
        if n_out is not None:
            stop = min(stop, n_out)
        skip = start - low * self.up // self.down  # the outputs of the left margin
        out = block[skip : skip + stop - start].astype(np.float32)
        self.first += self.step
        keep = max(self.first - self.margin, 0)  # what the next block still needs
        self.held, self.offset = self.held[keep - self.offset :], keep
        return out


def _margin(up: int, down: int) -> int:
    """Input samples beyond a block's ends that its outputs can see: scipy's default filter reaches
    10 * max(up, down) upsampled samples either side; rounded up to a multiple of `down` (plus one more
    `down` to spare) so every block starts on an output sample."""
    reach = -(-10 * max(up, down) // up)
    return (reach // down + 2) * down
