"""Per-track label time series: expression episodes, AU intensities and labels, valence/arousal, speech.

Expressions come as episodes with onset-apex-offset intensity ramps; each episode drives the AUs of its
FACS-style prototype. Labels are derived from the intensities the way an annotator would see them:
an AU is on when its intensity passes a per-AU threshold, the expression label covers the part of the
episode above a threshold (so early onset frames are labelled Neutral while already faintly moving, and
single frames near the boundary are ambiguous), with a little annotator noise (boundary jitter, lag,
short AU flips, occasional unsure stretches). Valence/arousal follow the episodes smoothly.
Speech (syllables) opens the mouth (AU25/AU26) and raises arousal a little; the audio track is
synthesised from the same syllables.

Two siblings of `make_timeline` serve the other demo datasets: `make_compound_timeline` (C-EXPR-DB:
episodes of compound expressions, each driving the union of its two basic prototypes' AUs) and
`make_reaction_timeline` (Hume-Vidmimic2: a short reaction blending several expressions and vocal bursts);
`mimicry_intensities` computes the six mimicry labels of a reaction from what was rendered and voiced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pipeline.tasks.definitions import AU_NAMES, BASIC_EMOTIONS, COMPOUND_CLASSES, EXPR_CLASSES, MIMICRY_NAMES

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
BASIC = {name: i for i, name in enumerate(BASIC_EMOTIONS)}  # column of Timeline.envelopes

# The two basic expressions blended by each compound class (C-EXPR-DB), in COMPOUND_CLASSES order.
COMPOUND_PARTS: dict[str, tuple[str, str]] = {
    "Fearfully_Surprised": ("Fear", "Surprise"),
    "Happily_Surprised": ("Happiness", "Surprise"),
    "Sadly_Surprised": ("Sadness", "Surprise"),
    "Disgustedly_Surprised": ("Disgust", "Surprise"),
    "Angrily_Surprised": ("Anger", "Surprise"),
    "Sadly_Fearful": ("Sadness", "Fear"),
    "Sadly_Angry": ("Sadness", "Anger"),
}
assert tuple(COMPOUND_PARTS) == COMPOUND_CLASSES


FAVOURED_GAP = 0.4  # longest neutral gap (s) between the favoured episodes of a compound video


@dataclass(frozen=True)
class Reaction:
    """How one Hume-Vidmimic2 reaction is shown.

    Attributes:
        parts: (basic prototype, peak relative to the reaction's level) pairs, shown together.
        voice: "" (silent), "laugh" (short open-vowel bursts) or "speech" (ordinary syllables).
        va: valence, arousal the reaction pulls towards at full intensity.
    """

    parts: tuple[tuple[str, float], ...]
    voice: str
    va: tuple[float, float]


# Determination's firm face (lowered brows, tightened lids, pressed lips) is the Anger prototype's AUs;
# it reads as determination, not anger, because valence stays near neutral.
REACTIONS: dict[str, Reaction] = {
    "Admiration": Reaction((("Happiness", 0.55), ("Surprise", 0.55)), "", (0.5, 0.3)),
    "Amusement": Reaction((("Happiness", 0.9),), "laugh", (0.75, 0.6)),
    "Determination": Reaction((("Anger", 0.9),), "", (0.05, 0.45)),
    "Empathic Pain": Reaction((("Sadness", 1.0),), "", (-0.6, -0.3)),
    "Excitement": Reaction((("Surprise", 1.0),), "speech", (0.5, 0.85)),
    "Joy": Reaction((("Happiness", 1.0),), "", (0.7, 0.4)),
}
assert tuple(REACTIONS) == MIMICRY_NAMES
# Per dimension, the 90th percentile of its raw score (`mimicry_raw_scores`) over simulated ~50-frame
# clips showing only that reaction at full strength: dividing by it maps such a clip to about 0.8 (0.6-1.0)
# and rarely saturates at 1. Fixed numbers, so a clip's labels never depend on the other clips.
MIMICRY_SCALE = np.array([0.37, 0.28, 0.55, 0.69, 0.56, 0.69])
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
        envelopes: [T, 6] float32 episode drive of each basic expression (`BASIC_EMOTIONS` order: the
            onset-apex-offset envelope times the episode's peak, max over episodes), in [0, 1].
        talk: [T] float32 mouth opening of speech (a bump per syllable) in [0, 1]; > 0 while voiced.
        compound: [T] int8 compound class index (`COMPOUND_CLASSES`), -1 outside compound episodes
            (compound timelines only, else None).
    """

    intensity: np.ndarray
    au: np.ndarray
    expr: np.ndarray
    va: np.ndarray
    syllables: list[Syllable]
    episodes: list[tuple[str, int, int]]
    envelopes: np.ndarray | None = None
    talk: np.ndarray | None = None
    compound: np.ndarray | None = None

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
    # The order of the random draws below fixes the demo corpus's bytes: keep it when editing.
    t = np.arange(n_frames) / fps
    classes = [c for c in EXPR_CLASSES if c != "Neutral"]
    mood = mood or str(rng.choice(classes))
    probs = np.array([4.0 if c == mood else 1.0 for c in classes])
    probs /= probs.sum()

    intensity = np.zeros((n_frames, N_AU), np.float32)
    expr = np.zeros(n_frames, np.int8)
    envelopes = np.zeros((n_frames, len(BASIC)), np.float32)
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
        env = envelope(t, start, onset, apex, offset) * peak
        if cls == "Other":
            core, optional = other_combination(rng), ()
            target_v, target_a = float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.1, 0.5))
        else:
            core, optional = PROTOTYPES[cls]
            target_v, target_a = VA_TARGETS[cls]
            envelopes[:, BASIC[cls]] = np.maximum(envelopes[:, BASIC[cls]], env)
        _drive_aus(t, rng, intensity, core, optional, (start, onset, apex, offset), peak)
        span = _label_span(env, rng)
        if span:
            expr[span[0] : span[1] + 1] = EXPR[cls]
            episodes.append((cls, *span))
        valence_push += env * (target_v - base_v)
        arousal_push += env * (target_a - base_a)
        start += onset + apex + offset + float(rng.uniform(0.3, 1.3))

    _spontaneous_aus(t, rng, intensity)
    syllables = _speech(n_frames, fps, rng, talk_allowed)
    talk = _speech_mouth(t, syllables, intensity)
    talk_smooth = gaussian_filter1d(talk, sigma=0.4 * fps)
    au = _au_labels(intensity, rng)
    _unsure(expr, rng, fps)
    va = _valence_arousal(base_v + valence_push, base_a + arousal_push + 0.15 * talk_smooth, fps, rng)
    return Timeline(
        np.clip(intensity, 0, 1), au, expr, va, syllables, episodes, envelopes, talk.astype(np.float32)
    )


def compound_prototype(cls: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(core AUs, optional AUs) of a compound class: the union of its two basic prototypes' cores, and
    of their optional AUs that neither core has (both in `AU_NAMES` order)."""
    first, second = (PROTOTYPES[part] for part in COMPOUND_PARTS[cls])
    core = set(first[0]) | set(second[0])
    optional = (set(first[1]) | set(second[1])) - core
    return tuple(a for a in AU_NAMES if a in core), tuple(a for a in AU_NAMES if a in optional)


def make_compound_timeline(
    n_frames: int,
    fps: float,
    rng: np.random.Generator,
    favour: tuple[str, ...] | list[str],
    talk_allowed: np.ndarray | None = None,
) -> Timeline:
    """Generate one C-EXPR-DB track: compound-expression episodes separated by neutral gaps.

    The favoured classes open the video (each once, in order, shortened when needed so that all of them
    fit, down to 0.4 s per episode, so each shows in all but very short videos); later episodes are drawn
    with the favoured classes 4x as likely as the others. An episode drives the union of its two basic
    prototypes' AUs (`compound_prototype`); valence/arousal move towards a blend of the two basic targets.

    Args:
        n_frames: number of frames T.
        fps: frame rate.
        rng: source of randomness.
        favour: compound classes (`COMPOUND_CLASSES`) this video favours.
        talk_allowed: [T] bool, frames where this person may speak.

    Returns:
        The timeline with `compound` [T] int8 set (class index in the labelled part of each episode, -1
        elsewhere and in unsure stretches); `expr` holds "Other" on compound frames (a mixture is no basic
        class), Neutral elsewhere.
    """
    t = np.arange(n_frames) / fps
    probs = np.array([4.0 if c in favour else 1.0 for c in COMPOUND_CLASSES])
    probs /= probs.sum()
    queue = list(favour)

    intensity = np.zeros((n_frames, N_AU), np.float32)
    expr = np.zeros(n_frames, np.int8)
    compound = np.full(n_frames, -1, np.int8)
    envelopes = np.zeros((n_frames, len(BASIC)), np.float32)
    valence_push = np.zeros(n_frames)
    arousal_push = np.zeros(n_frames)
    base_v = float(rng.uniform(-0.2, 0.3))
    base_a = float(rng.uniform(-0.3, 0.1))
    episodes = []

    start = min(float(rng.uniform(0.2, 0.8)), 0.15 * t[-1])  # a neutral lead-in (short in a short video)
    while True:
        timing = np.array([rng.uniform(0.2, 0.4), rng.uniform(0.5, 1.2), rng.uniform(0.2, 0.5)])
        room = t[-1] - start
        # While favoured classes are still to show, each gets an equal share of the room left (short gaps).
        budget = (room - FAVOURED_GAP * (len(queue) - 1)) / len(queue) if queue else room
        if timing.sum() > budget:
            if not queue or budget < 0.4:
                break
            timing *= 0.95 * budget / timing.sum()
        onset, apex, offset = (float(x) for x in timing)
        cls = queue.pop(0) if queue else str(rng.choice(COMPOUND_CLASSES, p=probs))
        peak = float(rng.uniform(0.65, 1.0))
        core, optional = compound_prototype(cls)
        first, second = COMPOUND_PARTS[cls]
        share = float(rng.uniform(0.4, 0.6))  # weight of the first part in the blended valence/arousal
        target_v, target_a = share * np.array(VA_TARGETS[first]) + (1 - share) * np.array(VA_TARGETS[second])
        env = envelope(t, start, onset, apex, offset) * peak
        _drive_aus(t, rng, intensity, core, optional, (start, onset, apex, offset), peak)
        for part in (first, second):
            envelopes[:, BASIC[part]] = np.maximum(envelopes[:, BASIC[part]], env)
        span = _label_span(env, rng)
        if span:
            compound[span[0] : span[1] + 1] = COMPOUND_CLASSES.index(cls)
            expr[span[0] : span[1] + 1] = EXPR["Other"]
            episodes.append((cls, *span))
        valence_push += env * (target_v - base_v)
        arousal_push += env * (target_a - base_a)
        gap = float(rng.uniform(0.3, 0.9))  # a neutral stretch
        start += onset + apex + offset + (min(gap, FAVOURED_GAP) if queue else gap)

    _spontaneous_aus(t, rng, intensity)
    syllables = _speech(n_frames, fps, rng, talk_allowed)
    talk = _speech_mouth(t, syllables, intensity)
    au = _au_labels(intensity, rng)
    _unsure(expr, rng, fps, compound)
    talk_smooth = gaussian_filter1d(talk, sigma=0.4 * fps)
    va = _valence_arousal(base_v + valence_push, base_a + arousal_push + 0.15 * talk_smooth, fps, rng)
    return Timeline(
        np.clip(intensity, 0, 1),
        au,
        expr,
        va,
        syllables,
        episodes,
        envelopes,
        talk.astype(np.float32),
        compound,
    )


def make_reaction_timeline(
    n_frames: int, fps: float, rng: np.random.Generator, mix: np.ndarray | tuple[float, ...]
) -> Timeline:
    """Generate one Hume-Vidmimic2 clip: a person mimicking a blend of reactions (`REACTIONS`).

    Every reaction with a level (weight / largest weight) of at least 0.1 is shown as one episode of its
    basic prototype(s) with peak ~ level, each starting in the first 30% of the clip and lasting nearly to
    its end, so they overlap into a blended face; "laugh" and "speech" reactions add vocal bursts during
    their episode (each burst kept with probability = level); now and then the person also says something
    unrelated. Valence/arousal move towards the envelope-weighted mean of the reactions' targets.

    Args:
        n_frames: number of frames T.
        fps: frame rate.
        rng: source of randomness.
        mix: [6] non-negative weights in `MIMICRY_NAMES` order (the drawn target mix; the labels are
            computed from the result by `mimicry_intensities`, not from this).

    Returns:
        The timeline; `expr` holds the strongest basic expression where its drive passes EXPR_THRESHOLD.
    """
    t = np.arange(n_frames) / fps
    duration = n_frames / fps
    mix = np.asarray(mix, np.float64)
    levels = mix / max(float(mix.max()), 1e-9)

    intensity = np.zeros((n_frames, N_AU), np.float32)
    envelopes = np.zeros((n_frames, len(BASIC)), np.float32)
    valence_push = np.zeros(n_frames)
    arousal_push = np.zeros(n_frames)
    weight = np.zeros(n_frames)
    base_v = float(rng.uniform(-0.1, 0.2))
    base_a = float(rng.uniform(-0.3, 0.0))
    episodes = []
    syllables: list[Syllable] = []

    for k, name in enumerate(MIMICRY_NAMES):
        if levels[k] < 0.1:
            continue
        reaction = REACTIONS[name]
        start = float(rng.uniform(0.0, 0.3)) * duration
        onset, offset = float(rng.uniform(0.2, 0.45)), float(rng.uniform(0.2, 0.45))
        end = float(rng.uniform(0.85, 1.0)) * duration
        apex = max(0.1, end - start - onset - offset)
        peak = float(levels[k] * rng.uniform(0.85, 1.0))
        env = envelope(t, start, onset, apex, offset) * peak
        for proto, rel in reaction.parts:
            core, optional = PROTOTYPES[proto]
            _drive_aus(t, rng, intensity, core, optional, (start, onset, apex, offset), peak * rel)
            envelopes[:, BASIC[proto]] = np.maximum(envelopes[:, BASIC[proto]], env * rel)
        target_v, target_a = reaction.va
        valence_push += env * (target_v - base_v)
        arousal_push += env * (target_a - base_a)
        weight += env
        if reaction.voice:
            syllables += _vocal_bursts(reaction.voice, start + onset, start + onset + apex, levels[k], rng)
        above = np.flatnonzero(env >= EXPR_THRESHOLD)
        if len(above):
            episodes.append((name, int(above[0]), int(above[-1])))
    syllables = _add_syllables([], syllables, duration)
    if rng.random() < 0.25:  # an unrelated remark (voice that carries no reaction), where the mouth is free
        s = float(rng.uniform(0.0, 0.5)) * duration
        remark = _vocal_bursts("speech", s, s + float(rng.uniform(0.4, 1.0)), 1.0, rng)
        syllables = _add_syllables(syllables, remark, duration)

    _spontaneous_aus(t, rng, intensity)
    talk = _speech_mouth(t, syllables, intensity)
    au = _au_labels(intensity, rng)
    strongest = envelopes.argmax(axis=1)
    basic_to_expr = np.array([EXPR[name] for name in BASIC_EMOTIONS], np.int8)
    expr = np.where(envelopes.max(axis=1) >= EXPR_THRESHOLD, basic_to_expr[strongest], 0).astype(np.int8)
    # Blend, not sum: overlapping reactions pull towards their weighted mean target.
    blend = np.maximum(weight, 1.0)
    talk_smooth = gaussian_filter1d(talk, sigma=0.4 * fps)
    va = _valence_arousal(
        base_v + valence_push / blend, base_a + arousal_push / blend + 0.15 * talk_smooth, fps, rng
    )
    return Timeline(
        np.clip(intensity, 0, 1), au, expr, va, syllables, episodes, envelopes, talk.astype(np.float32)
    )


def voice_activity(talk: np.ndarray, fps: float) -> np.ndarray:
    """[T] share of the surrounding ~0.2 s that is voiced (Gaussian window, sigma 0.1 s), in [0, 1]."""
    return np.clip(gaussian_filter1d((talk > 0).astype(np.float64), sigma=0.1 * fps, mode="constant"), 0, 1)


def mimicry_raw_scores(timeline: Timeline, fps: float) -> np.ndarray:
    """[6] raw mimicry scores (`MIMICRY_NAMES` order) from what was rendered and voiced, before scaling.

    Per frame t, with H, S, Sd, F the rendered drive of Happiness, Surprise, Sadness and the firm face
    (Anger prototype) (`Timeline.envelopes`), voice the voice activity (`voice_activity`), v and a the
    valence and arousal; each score is the mean over frames of:

        Admiration     min(H, S)                      smiling and wide-eyed together
        Amusement      H * voice                      smiling while laughing / talking
        Determination  F * (1 - |v|)                  firm brows and lips, neutral valence
        Empathic Pain  Sd                             brows drawn up and together, lip corners down
        Excitement     max(a, 0) * max(S, voice)      aroused, wide-eyed or vocal (the voice is louder
                                                      and higher the higher the arousal)
        Joy            H                              smiling
    """
    if timeline.envelopes is None or timeline.talk is None:
        raise ValueError("the timeline has no envelopes / talk (not made by a dynamics.make_* function)")
    env = timeline.envelopes.astype(np.float64)
    happy, surprise = env[:, BASIC["Happiness"]], env[:, BASIC["Surprise"]]
    sad, firm = env[:, BASIC["Sadness"]], env[:, BASIC["Anger"]]
    voice = voice_activity(timeline.talk, fps)
    valence, arousal = timeline.va[:, 0].astype(np.float64), timeline.va[:, 1].astype(np.float64)
    per_frame = [
        np.minimum(happy, surprise),
        happy * voice,
        firm * (1 - np.abs(valence)),
        sad,
        np.clip(arousal, 0, 1) * np.maximum(surprise, voice),
        happy,
    ]
    return np.array([float(x.mean()) for x in per_frame])


def mimicry_intensities(timeline: Timeline, fps: float) -> np.ndarray:
    """[6] float32 mimicry labels in [0, 1] (`MIMICRY_NAMES` order): `mimicry_raw_scores` / `MIMICRY_SCALE`,
    clipped to [0, 1] (a clip of one reaction at full strength scores ~0.8, an absent reaction 0)."""
    return np.clip(mimicry_raw_scores(timeline, fps) / MIMICRY_SCALE, 0, 1).astype(np.float32)


def _vocal_bursts(
    kind: str, start: float, end: float, level: float, rng: np.random.Generator
) -> list[Syllable]:
    """Syllables between start and end (seconds): "laugh" = 0.08-0.16 s bursts mostly on "a" with short
    breaths between; "speech" = 0.12-0.28 s syllables on any vowel. Each is kept with probability level."""
    out = []
    s = start + float(rng.uniform(0.0, 0.15))
    while s < end - 0.08:
        if kind == "laugh":
            d = float(rng.uniform(0.08, 0.16))
            vowel = "a" if rng.random() < 0.7 else str(rng.choice(("e", "o")))
            gap = float(rng.uniform(0.04, 0.1))
        else:
            d = float(rng.uniform(0.12, 0.28))
            vowel = str(rng.choice(VOWELS))
            gap = float(rng.uniform(0.1, 0.35)) if rng.random() < 0.15 else 0.0
        if rng.random() < level:
            out.append(Syllable(s, min(s + d, end), vowel))
        s += d + gap
    return out


def _add_syllables(kept: list[Syllable], new: list[Syllable], duration: float) -> list[Syllable]:
    """`kept` plus the syllables of `new` (in time order) that overlap nothing already there (one mouth),
    cut at the clip's end; sorted by start."""
    out = list(kept)
    for syl in sorted(new, key=lambda s: s.start):
        end = min(syl.end, duration - 0.02)
        if end - syl.start >= 0.05 and all(end <= k.start or syl.start >= k.end for k in out):
            out.append(Syllable(syl.start, end, syl.vowel))
    return sorted(out, key=lambda s: s.start)


def _drive_aus(
    t: np.ndarray,
    rng: np.random.Generator,
    intensity: np.ndarray,
    core: tuple[str, ...],
    optional: tuple[str, ...],
    timing: tuple[float, float, float, float],
    peak: float,
) -> None:
    """Add one episode into intensity [T, 12] (in place, max): each core AU and each optional AU kept with
    probability 0.5 follows the episode's envelope with its own weight and a small lag.

    Args:
        timing: (start, onset, apex, offset) in seconds.
    """
    start, onset, apex, offset = timing
    for name in core + tuple(a for a in optional if rng.random() < 0.5):
        weight = rng.uniform(0.75, 1.0) if name in core else rng.uniform(0.4, 0.9)
        lag = rng.uniform(-0.08, 0.08)  # AUs of one expression do not start on the same frame
        au_env = envelope(t, start + lag, onset, apex, offset) * peak * weight
        intensity[:, AU[name]] = np.maximum(intensity[:, AU[name]], au_env)


def _label_span(env: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """(first, last) frame labelled with the episode: the part above threshold, with the boundaries
    jittered by a couple of frames; None when the episode never passes the threshold."""
    above = np.flatnonzero(env >= EXPR_THRESHOLD)
    if not len(above):
        return None
    n_frames = len(env)
    first = int(np.clip(above[0] + rng.integers(-2, 3), 0, n_frames - 1))
    last = int(np.clip(above[-1] + rng.integers(-2, 3), 0, n_frames - 1))
    return first, last


def _spontaneous_aus(t: np.ndarray, rng: np.random.Generator, intensity: np.ndarray) -> None:
    """Spontaneous single AUs (brow flashes, lid tightening, a polite smile...) that carry no emotion label
    (in place)."""
    n_events = rng.poisson(0.2 * t[-1])
    for _ in range(n_events):
        names = [("AU1", "AU2"), ("AU7",), ("AU4",), ("AU12",), ("AU24",), ("AU15",), ("AU10",)]
        pick = names[int(rng.integers(len(names)))]
        s0, dur = float(rng.uniform(0, t[-1])), float(rng.uniform(0.3, 1.0))
        env = envelope(t, s0, dur * 0.3, dur * 0.4, dur * 0.3) * float(rng.uniform(0.3, 0.7))
        for name in pick:
            intensity[:, AU[name]] = np.maximum(intensity[:, AU[name]], env)


def _speech_mouth(t: np.ndarray, syllables: list[Syllable], intensity: np.ndarray) -> np.ndarray:
    """Open the mouth on each syllable (lips apart, some jaw; in place). Returns talk [T] in [0, 1]."""
    talk = np.zeros(len(t))
    for syl in syllables:
        mid, half = (syl.start + syl.end) / 2, (syl.end - syl.start) / 2
        bump = np.clip(1 - ((t - mid) / half) ** 2, 0, 1)
        talk = np.maximum(talk, bump)
        open_ = 0.35 + 0.4 * bump
        intensity[:, AU["AU25"]] = np.maximum(intensity[:, AU["AU25"]], np.where(bump > 0, open_, 0))
        jaw = 0.5 * bump * _VOWEL_JAW[syl.vowel]
        intensity[:, AU["AU26"]] = np.maximum(intensity[:, AU["AU26"]], jaw)
    return talk


def _valence_arousal(
    valence: np.ndarray, arousal: np.ndarray, fps: float, rng: np.random.Generator
) -> np.ndarray:
    """[T, 2] float32 annotated valence/arousal from the underlying [T] curves: slow drift added,
    smoothed, annotator lag, small noise, clipped to [-1, 1]."""
    n_frames = len(valence)
    drift = gaussian_filter1d(rng.normal(0, 1, (n_frames, 2)), sigma=2.0 * fps, axis=0, mode="nearest")
    drift *= 0.1 / max(float(drift.std()), 1e-6)
    v = valence + drift[:, 0]
    a = arousal + drift[:, 1]
    va = np.stack([v, a], axis=1)
    va = gaussian_filter1d(va, sigma=0.2 * fps, axis=0, mode="nearest")
    lag = 2
    va = np.concatenate([np.repeat(va[:1], lag, axis=0), va[:-lag]])
    va += rng.normal(0, 0.015, va.shape)
    return np.clip(va, -1, 1).astype(np.float32)


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


def _unsure(expr: np.ndarray, rng: np.random.Generator, fps: float, *also: np.ndarray) -> None:
    """Occasionally mark a short stretch as unsure (-1), as Aff-Wild2's EXPR files have (in place, in expr
    and in every array of `also`)."""
    if rng.random() < 0.25:
        n = len(expr)
        length = int(rng.uniform(0.3, 1.0) * fps)
        s = int(rng.integers(0, max(1, n - length)))
        for labels in (expr, *also):
            labels[s : s + length] = -1
