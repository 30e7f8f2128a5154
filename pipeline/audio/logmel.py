"""VGGish's log-mel front end, from torchvggish's copy of the AudioSet release code (`mel_features`).

VGGish defines it as: 16 kHz mono; STFT magnitude with a 25 ms periodic Hann window (400 samples, FFT 512)
every 10 ms (160 samples); 64 mel bands (HTK mel scale) from 125 to 7500 Hz; log(mel + 0.01). Log-mel
frame f covers samples [160 f, 160 f + 400), so its centre is at 0.0125 + 0.01 f seconds. A VGGish example
is 96 consecutive frames (0.96 s); VGGish's own examples do not overlap (hop 0.96 s).

torchvggish's package `__init__` imports resampy (and with it numba) at import time; the two modules used
here import only numpy, so they are loaded from their files without running that `__init__`.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import numpy as np

from pipeline.audio.read import resample


def torchvggish_module(name: str) -> ModuleType:
    """torchvggish's submodule `name` ("mel_features", "vggish_params", "torchvggish"), loaded from its
    file without executing the package's `__init__` (which needs resampy)."""
    key = f"_affectflow_torchvggish.{name}"  # a private name: `import torchvggish` elsewhere is unaffected
    if key in sys.modules:
        return sys.modules[key]
    package = importlib.util.find_spec("torchvggish")  # finds the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ImportError("torchvggish is not installed (pip install torchvggish==0.2)")
    location = f"{package.submodule_search_locations[0]}/{name}.py"
    spec = importlib.util.spec_from_file_location(key, location)
    if spec is None or spec.loader is None:
        raise ImportError(f"torchvggish has no module '{name}' ({location})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


mel_features = torchvggish_module("mel_features")
params = torchvggish_module("vggish_params")

SAMPLE_RATE: int = params.SAMPLE_RATE  # 16000
WINDOW_SAMPLES = int(round(SAMPLE_RATE * params.STFT_WINDOW_LENGTH_SECONDS))  # 400
HOP_SAMPLES = int(round(SAMPLE_RATE * params.STFT_HOP_LENGTH_SECONDS))  # 160
HOP_SECONDS: float = params.STFT_HOP_LENGTH_SECONDS  # 0.01: the log-mel frame rate is 100 Hz
N_BANDS: int = params.NUM_MEL_BINS  # 64
EXAMPLE_FRAMES: int = params.NUM_FRAMES  # 96 log-mel frames = 0.96 s
EXAMPLE_HOP_SECONDS: float = params.EXAMPLE_HOP_SECONDS  # 0.96: VGGish's examples do not overlap
BLOCK_FRAMES = 6000  # log-mel frames computed per call (60 s of audio)
SILENCE = float(np.log(params.LOG_OFFSET))  # the log-mel value of digital silence, log(0.01)


def frame_centres(n_frames: int) -> np.ndarray:
    """[F] centre time in seconds of log-mel frames 0..F-1 (sample 0 at t = 0)."""
    return (np.arange(n_frames) * HOP_SAMPLES + WINDOW_SAMPLES / 2) / SAMPLE_RATE


def log_mel(samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """VGGish's log-mel spectrogram of mono audio (resampled to 16 kHz first when needed).

    Args:
        samples: [N] mono samples in [-1, 1].
        rate: their sample rate.

    Returns:
        log_mel: [F, 64] float32, F = 1 + (N16 - 400) // 160 complete 25 ms windows of the 16 kHz signal
            (0 when shorter than one window; a trailing partial window is dropped, as VGGish does).
        times: [F] float64 centre time of each frame in seconds (`frame_centres`).
    """
    samples = resample(np.asarray(samples, dtype=np.float32).reshape(-1), rate, SAMPLE_RATE)
    if len(samples) < WINDOW_SAMPLES:
        return np.zeros((0, N_BANDS), np.float32), np.zeros(0)
    n_frames = 1 + (len(samples) - WINDOW_SAMPLES) // HOP_SAMPLES
    blocks = []
    # Frames are independent, so blocks of them give the same values as one call, in bounded memory
    # (one call holds [F, 400] frames and [F, 257] complex spectra: ~0.5 GB per 10 minutes).
    for first in range(0, n_frames, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, n_frames - first)
        piece = samples[first * HOP_SAMPLES : (first + count - 1) * HOP_SAMPLES + WINDOW_SAMPLES]
        block = mel_features.log_mel_spectrogram(
            piece.astype(np.float64),
            audio_sample_rate=SAMPLE_RATE,
            log_offset=params.LOG_OFFSET,
            window_length_secs=params.STFT_WINDOW_LENGTH_SECONDS,
            hop_length_secs=params.STFT_HOP_LENGTH_SECONDS,
            num_mel_bins=params.NUM_MEL_BINS,
            lower_edge_hertz=params.MEL_MIN_HZ,
            upper_edge_hertz=params.MEL_MAX_HZ,
        )
        blocks.append(block.astype(np.float32))
    return np.concatenate(blocks), frame_centres(n_frames)


def n_log_mel_frames(n_samples: int, rate: int) -> int:
    """F that `log_mel` gives for `n_samples` at `rate` (resample_poly gives ceil(N * 16000 / rate))."""
    resampled = -(-n_samples * SAMPLE_RATE // rate)
    return 0 if resampled < WINDOW_SAMPLES else 1 + (resampled - WINDOW_SAMPLES) // HOP_SAMPLES


def band_centres() -> np.ndarray:
    """[64] centre frequency in Hz of each mel band (HTK mel scale, 125-7500 Hz, as VGGish)."""
    low, high = mel_features.hertz_to_mel(params.MEL_MIN_HZ), mel_features.hertz_to_mel(params.MEL_MAX_HZ)
    mels = np.linspace(low, high, N_BANDS + 2)[1:-1]
    return 700.0 * (np.exp(mels / 1127.0) - 1.0)  # inverse of mel_features.hertz_to_mel


def hop_frames(hop_seconds: float) -> int:
    """Example hop in log-mel frames (at least 1)."""
    if hop_seconds <= 0:
        raise ValueError(f"the example hop must be positive, got {hop_seconds} s")
    return max(1, int(round(hop_seconds / HOP_SECONDS)))


def vggish_examples(log_mel: np.ndarray, hop_seconds: float = EXAMPLE_HOP_SECONDS) -> np.ndarray:
    """Cut a log-mel spectrogram into VGGish examples of 96 frames (0.96 s), one every `hop_seconds`.

    Only complete examples are kept (as VGGish's `waveform_to_examples`): E = 1 + (F - 96) // hop, 0 when
    F < 96 (`pad_to_example` pads a short clip with silence first).

    Args:
        log_mel: [F, 64] from `log_mel`.
        hop_seconds: time between example starts; 0.96 (VGGish's default) gives non-overlapping examples.

    Returns:
        [E, 1, 96, 64] float32, the layout VGGish's first convolution takes (channel 1, time, mel band).
    """
    log_mel = np.ascontiguousarray(log_mel, dtype=np.float32)
    if log_mel.ndim != 2 or log_mel.shape[1] != N_BANDS:
        raise ValueError(f"log_mel must be [F, {N_BANDS}], got {list(log_mel.shape)}")
    if len(log_mel) < EXAMPLE_FRAMES:
        return np.zeros((0, 1, EXAMPLE_FRAMES, N_BANDS), np.float32)
    examples = mel_features.frame(log_mel, window_length=EXAMPLE_FRAMES, hop_length=hop_frames(hop_seconds))
    return np.ascontiguousarray(examples[:, None])  # a copy: `frame` returns a strided view


def example_centres(n_examples: int, hop_seconds: float = EXAMPLE_HOP_SECONDS) -> np.ndarray:
    """[E] centre time in seconds of the examples `vggish_examples` cuts (sample 0 at t = 0): the mean of
    the centres of its 96 frames, 0.4875 s for example 0."""
    starts = np.arange(n_examples) * hop_frames(hop_seconds)
    return frame_centres(1)[0] + (starts + (EXAMPLE_FRAMES - 1) / 2) * HOP_SECONDS


def pad_to_example(log_mel: np.ndarray) -> np.ndarray:
    """[F, 64] -> [max(F, 96), 64]: a clip shorter than one example is padded with silence at its end,
    so that it still gets one (VGGish itself would give none)."""
    missing = EXAMPLE_FRAMES - len(log_mel)
    if missing <= 0:
        return log_mel
    return np.concatenate([log_mel, np.full((missing, N_BANDS), SILENCE, np.float32)])
