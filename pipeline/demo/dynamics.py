"""Per-track label time series: expression episodes, AU intensities and labels, valence/arousal, speech.

Expressions come as episodes with onset-apex-offset intensity ramps; each episode drives the AUs of its
FACS-style prototype. Labels are derived from the intensities the way an annotator would see them:
an AU is on when its intensity passes a per-AU threshold, the expression label covers the part of the
episode above a threshold (so early onset frames are labelled Neutral while already faintly moving, and
single frames near the boundary are ambiguous), with a little annotator noise (boundary jitter, lag,
short AU flips, occasional unsure stretches). Valence/arousal follow the episodes smoothly.
Speech (syllables) opens the mouth (AU25/AU26) and raises arousal a little; the audio track is
synthesised from the same syllables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pipeline.tasks.definitions import AU_NAMES, EXPR_CLASSES

N_AU = len(AU_NAMES)
AU = {name: i for i, name in enumerate(AU_NAMES)}
EXPR = {name: i for i, name in enumerate(EXPR_CLASSES)}

# (core AUs, optional AUs) per expression, FACS-style prototypes (AU9 is not among the 12: AU10 stands in).
PROTOTYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Anger": (("AU4", "AU7", "AU23", "AU24"), ()),
    "Disgust": (("AU10", "AU15"), ("AU4",)),
    "Fear": (("AU1", "AU2", "AU4", "AU7", "AU25"), ("AU26",)),
    "Happiness": (("AU6", "AU12"), ("AU25",)),
    "Sadness": (("AU1", "AU4", "AU15"), ()),
    "Surprise": (("AU1", "AU2", "AU25", "AU26"), ()),
}
# Valence/arousal at full intensity per expression.
VA_TARGETS: dict[str, tuple[float, float]] = {
    "Anger": (-0.6, 0.65),
    "Disgust": (-0.55, 0.3),
    "Fear": (-0.6, 0.7),
    "Happiness": (0.7, 0.4),
    "Sadness": (-0.6, -0.45),
    "Surprise": (0.2, 0.75),
}
# AU on-thresholds on intensity (what annotators call "present").
AU_THRESHOLDS = np.array([0.3, 0.3, 0.3, 0.3, 0.35, 0.3, 0.3, 0.3, 0.35, 0.35, 0.3, 0.35], np.float32)
EXPR_THRESHOLD = 0.3
VOWELS = ("a", "e", "i", "o", "u")
# Jaw opening per vowel (AU26 share during speech).
_VOWEL_JAW = {"a": 1.0, "e": 0.6, "i": 0.3, "o": 0.8, "u": 0.4}


@dataclass(frozen=True)
class Syllable:
    start: float  # seconds
    end: float  # seconds
    vowel: str


@dataclass
class Timeline:
    """Ground truth of one person-track.

    Attributes:
        intensity: [T, 12] float32 AU intensities in [0, 1] (what is rendered).
        au: [T, 12] int8 AU labels 0/1.
        expr: [T] int8 expression class index (-1 where the annotator was unsure).
        va: [T, 2] float32 valence, arousal in [-1, 1].
        syllables: spoken syllables (for the audio track).
        episodes: (class name, start frame, end frame) of each expression episode.
    """

    intensity: np.ndarray
    au: np.ndarray
    expr: np.ndarray
    va: np.ndarray
    syllables: list[Syllable]
    episodes: list[tuple[str, int, int]]

    @property
    def n_frames(self) -> int:
        return len(self.expr)


def _ramp(x: np.ndarray) -> np.ndarray:
    """Smoothstep on [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def envelope(t: np.ndarray, start: float, onset: float, apex: float, offset: float) -> np.ndarray:
    """[T] onset-apex-offset intensity profile in [0, 1] at times t (seconds)."""
    rise = _ramp((t - start) / onset)
    fall = 1.0 - _ramp((t - start - onset - apex) / offset)
    return np.minimum(rise, fall)


def other_combination(rng: np.random.Generator) -> tuple[str, ...]:
    """2-3 AUs that contain no prototype's core (an "Other" expression)."""
    cores = [set(core) for core, _ in PROTOTYPES.values()]
    while True:
        combo = tuple(sorted(rng.choice(AU_NAMES, size=int(rng.integers(2, 4)), replace=False)))
        if not any(core <= set(combo) for core in cores):
            return combo


def _speech(
    n_frames: int, fps: float, rng: np.random.Generator, talk_allowed: np.ndarray | None
) -> list[Syllable]:
    """Talk segments of 1-3 s made of 0.12-0.28 s syllables."""
    duration = n_frames / fps
    syllables = []
    t = float(rng.uniform(0.2, 1.5))
    talkativeness = float(rng.uniform(0.3, 0.7))
    while t < duration - 0.5:
        seg = float(rng.uniform(1.0, 3.0))
        talks = rng.random() < talkativeness
        end = min(duration - 0.2, t + seg)
        if talks:
            s = t
            while s < end - 0.12:
                d = float(rng.uniform(0.12, 0.28))
                frame = int(s * fps)
                if talk_allowed is None or talk_allowed[min(frame, n_frames - 1)]:
                    syllables.append(Syllable(s, min(s + d, end), str(rng.choice(VOWELS))))
                s += d + (float(rng.uniform(0.1, 0.35)) if rng.random() < 0.15 else 0.0)
        t = end + float(rng.uniform(0.3, 1.2))
    return syllables


def make_timeline(
    n_frames: int,
    fps: float,
    rng: np.random.Generator,
    mood: str | None = None,
    talk_allowed: np.ndarray | None = None,
) -> Timeline:
    """Generate one track's labels.

    Args:
        n_frames: number of frames T.
        fps: frame rate.
        rng: source of randomness.
        mood: expression class (not Neutral) favoured in this track; random when None.
        talk_allowed: [T] bool, frames where this person may speak (two-person turn taking).

    Returns:
        The timeline (no-face frames are not marked here; the corpus writer does that).
    """
    t = np.arange(n_frames) / fps
    classes = [c for c in EXPR_CLASSES if c != "Neutral"]
    mood = mood or str(rng.choice(classes))
    probs = np.array([4.0 if c == mood else 1.0 for c in classes])
    probs /= probs.sum()

    intensity = np.zeros((n_frames, N_AU), np.float32)
    expr = np.zeros(n_frames, np.int8)
    valence_push = np.zeros(n_frames)  # (target - baseline) * envelope, summed over episodes
    arousal_push = np.zeros(n_frames)
    base_v = float(rng.uniform(-0.2, 0.3))
    base_a = float(rng.uniform(-0.3, 0.1))
    episodes = []

    start = float(rng.uniform(0.2, 1.2))
    while True:
        onset, apex, offset = rng.uniform(0.25, 0.7), rng.uniform(0.6, 2.2), rng.uniform(0.3, 0.9)
        if start + onset + apex + offset > t[-1]:
            break
        cls = str(rng.choice(classes, p=probs))
        peak = float(rng.uniform(0.6, 1.0))
        if cls == "Other":
            core, optional = other_combination(rng), ()
            target_v, target_a = float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.1, 0.5))
        else:
            core, optional = PROTOTYPES[cls]
            target_v, target_a = VA_TARGETS[cls]
        env = envelope(t, start, onset, apex, offset) * peak
        for name in core + tuple(a for a in optional if rng.random() < 0.5):
            weight = rng.uniform(0.75, 1.0) if name in core else rng.uniform(0.4, 0.9)
            lag = rng.uniform(-0.08, 0.08)  # AUs of one expression do not start on the same frame
            au_env = envelope(t, start + lag, onset, apex, offset) * peak * weight
            intensity[:, AU[name]] = np.maximum(intensity[:, AU[name]], au_env)
        # Label the part of the episode above threshold, with the boundaries jittered by a couple of frames.
        above = np.flatnonzero(env >= EXPR_THRESHOLD)
        if len(above):
            first = int(np.clip(above[0] + rng.integers(-2, 3), 0, n_frames - 1))
            last = int(np.clip(above[-1] + rng.integers(-2, 3), 0, n_frames - 1))
            expr[first : last + 1] = EXPR[cls]
            episodes.append((cls, first, last))
        valence_push += env * (target_v - base_v)
        arousal_push += env * (target_a - base_a)
        start += onset + apex + offset + float(rng.uniform(0.3, 1.3))

    # Spontaneous single AUs (brow flashes, lid tightening, a polite smile...) that carry no emotion label.
    n_events = rng.poisson(0.2 * t[-1])
    for _ in range(n_events):
        names = [("AU1", "AU2"), ("AU7",), ("AU4",), ("AU12",), ("AU24",), ("AU15",), ("AU10",)]
        pick = names[int(rng.integers(len(names)))]
        s0, dur = float(rng.uniform(0, t[-1])), float(rng.uniform(0.3, 1.0))
        env = envelope(t, s0, dur * 0.3, dur * 0.4, dur * 0.3) * float(rng.uniform(0.3, 0.7))
        for name in pick:
            intensity[:, AU[name]] = np.maximum(intensity[:, AU[name]], env)

    # Speech: mouth opens on each syllable (lips apart, some jaw), arousal rises a little.
    syllables = _speech(n_frames, fps, rng, talk_allowed)
    talk = np.zeros(n_frames)
    for syl in syllables:
        mid, half = (syl.start + syl.end) / 2, (syl.end - syl.start) / 2
        bump = np.clip(1 - ((t - mid) / half) ** 2, 0, 1)
        talk = np.maximum(talk, bump)
        open_ = 0.35 + 0.4 * bump
        intensity[:, AU["AU25"]] = np.maximum(intensity[:, AU["AU25"]], np.where(bump > 0, open_, 0))
        jaw = 0.5 * bump * _VOWEL_JAW[syl.vowel]
        intensity[:, AU["AU26"]] = np.maximum(intensity[:, AU["AU26"]], jaw)
    talk_smooth = gaussian_filter1d(talk, sigma=0.4 * fps)

    au = _au_labels(intensity, rng)
    _unsure(expr, rng, fps)

    # Valence/arousal: baseline drift + episodes + speech, smoothed, annotator lag, small noise.
    drift = gaussian_filter1d(rng.normal(0, 1, (n_frames, 2)), sigma=2.0 * fps, axis=0, mode="nearest")
    drift *= 0.1 / max(float(drift.std()), 1e-6)
    v = base_v + valence_push + drift[:, 0]
    a = base_a + arousal_push + 0.15 * talk_smooth + drift[:, 1]
    va = np.stack([v, a], axis=1)
    va = gaussian_filter1d(va, sigma=0.2 * fps, axis=0, mode="nearest")
    lag = 2
    va = np.concatenate([np.repeat(va[:1], lag, axis=0), va[:-lag]])
    va += rng.normal(0, 0.015, va.shape)
    va = np.clip(va, -1, 1).astype(np.float32)
    return Timeline(np.clip(intensity, 0, 1), au, expr, va, syllables, episodes)


def _au_labels(intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[T, 12] int8 labels: thresholded intensity with a per-AU annotator lag and short flips."""
    n = len(intensity)
    labels = (intensity >= AU_THRESHOLDS).astype(np.int8)
    for k in range(N_AU):
        lag = int(rng.integers(-2, 3))
        if lag > 0:
            labels[lag:, k] = labels[:-lag, k].copy()
        elif lag < 0:
            labels[:lag, k] = labels[-lag:, k].copy()
        for _ in range(rng.poisson(n * 0.004)):
            s = int(rng.integers(0, n))
            labels[s : s + int(rng.integers(1, 5)), k] ^= 1
    return labels


def _unsure(expr: np.ndarray, rng: np.random.Generator, fps: float) -> None:
    """Occasionally mark a short stretch as unsure (-1), as Aff-Wild2's EXPR files have (in place)."""
    if rng.random() < 0.25:
        n = len(expr)
        length = int(rng.uniform(0.3, 1.0) * fps)
        s = int(rng.integers(0, max(1, n - length)))
        expr[s : s + length] = -1
