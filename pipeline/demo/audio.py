"""Speech-like audio: a voiced source whose pitch and loudness follow arousal (prosody).

Each syllable is a harmonic series on a glottal pitch f0(t) = f0 * 2^(0.35 * arousal(t)), shaped by the
formants of its vowel, with a raised-cosine loudness envelope scaled by arousal. Between syllables there
is only a faint room tone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile

from pipeline.demo.dynamics import Syllable

# (F1, F2, F3) formant frequencies in Hz per vowel, and their bandwidths.
FORMANTS = {
    "a": (800.0, 1200.0, 2500.0),
    "e": (450.0, 1900.0, 2500.0),
    "i": (300.0, 2300.0, 3000.0),
    "o": (500.0, 900.0, 2400.0),
    "u": (350.0, 750.0, 2300.0),
}
BANDWIDTHS = (90.0, 110.0, 170.0)


def _harmonic_gains(f0: float, vowel: str, max_freq: float) -> np.ndarray:
    """[K] amplitude of harmonics 1..K (K*f0 < max_freq): 1/k source tilt times a formant envelope."""
    k = np.arange(1, int(max_freq // f0) + 1)
    freq = k * f0
    env = sum(1.0 / (1.0 + ((freq - f) / b) ** 2) for f, b in zip(FORMANTS[vowel], BANDWIDTHS, strict=True))
    return env / k**0.8


def synthesize_voice(
    n_samples: int,
    rate: int,
    syllables: list[Syllable],
    arousal: np.ndarray,
    fps: float,
    f0: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One speaker's voice.

    Args:
        n_samples: output length.
        rate: sample rate (Hz).
        syllables: what is said, when.
        arousal: [T] per-frame arousal in [-1, 1] (frames without a label: use a neighbour's value).
        fps: frame rate of `arousal`.
        f0: speaker's base pitch (Hz).
        rng: generator (pitch jitter, breath noise).

    Returns:
        [n_samples] float32 signal, roughly in [-1, 1].
    """
    out = np.zeros(n_samples, np.float32)
    t_all = np.arange(n_samples) / rate
    frame_of = np.minimum((t_all * fps).astype(int), len(arousal) - 1)
    pitch = f0 * 2.0 ** (0.35 * arousal[frame_of]) * (1 + 0.02 * np.sin(2 * np.pi * 5.0 * t_all))
    phase = 2 * np.pi * np.cumsum(pitch) / rate  # continuous glottal phase across syllables
    loud = 0.35 + 0.3 * (arousal[frame_of] + 1)
    for syl in syllables:
        s, e = int(syl.start * rate), min(n_samples, int(syl.end * rate))
        if e - s < 16:
            continue
        u = np.linspace(0, 1, e - s, dtype=np.float32)
        env = np.clip(np.sin(np.pi * u), 0, 1) ** 0.6 * loud[s:e]
        mean_pitch = float(pitch[s:e].mean()) * float(rng.uniform(0.97, 1.03))
        gains = _harmonic_gains(mean_pitch, syl.vowel, min(4000.0, rate / 2 - 200))
        k = np.arange(1, len(gains) + 1)[:, None]
        voiced = (gains[:, None] * np.sin(k * phase[None, s:e])).sum(0)
        voiced /= max(float(np.abs(voiced).max()), 1e-6)
        breath = rng.normal(0, 0.03, e - s)
        out[s:e] += (env * (voiced + breath)).astype(np.float32)
    return out


def write_wav(
    path: Path, voices: list[np.ndarray], rate: int, rng: np.random.Generator, absolute_level: bool = False
) -> None:
    """Mix voices with a faint room tone and write 16-bit mono WAV.

    Args:
        absolute_level: keep the synthesised level (full scale = 1.25), so loudness follows arousal from
            file to file and a file without speech holds only the faint room tone; default: scale each
            file to the same peak.
    """
    n = len(voices[0])
    mix = np.sum(voices, axis=0) if voices else np.zeros(n, np.float32)
    room = np.cumsum(rng.normal(0, 1, n)).astype(np.float32)
    room -= np.convolve(room, np.ones(64) / 64, mode="same").astype(
        np.float32
    )  # remove the random-walk drift
    mix = mix + 0.004 * room / max(float(np.abs(room).max()), 1e-6)
    peak = 1.0 if absolute_level else max(float(np.abs(mix).max()), 1e-6)
    pcm = np.round(np.clip(mix / peak * 0.8, -1, 1) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, pcm)
