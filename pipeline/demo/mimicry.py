"""The Hume-Vidmimic2 part of the demo corpus: reaction clips with six mimicry intensities per video.

Layout under `<out_dir>/Hume-Vidmimic2/` (read by `pipeline.datasets.mimicry`):

    raw/<name>.mp4          name = 00001, 00002, ...
    audio/<name>.wav        16 kHz mono voice (laughter, exclamations) at its synthesised level: pitch and
                            loudness follow arousal; a clip without vocal reaction holds only room tone
    transcripts/<name>.txt  one line matching the strongest reaction
    train_split.csv, valid_split.csv
                            `Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy`,
                            one row per video, 6 intensities in [0, 1] with 4 decimals
    subjects.csv, README.txt

A person is in the file of their Aff-Wild2 split (`corpus.split_identities`), never in both. Each clip
shows a random mix of the six reactions (`draw_mix`, rendered by `dynamics.make_reaction_timeline`); the
labels are then computed from what was rendered and voiced (`dynamics.mimicry_intensities`), not from
the drawn mix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.datasets.mimicry import HEADER, RAW_DIR, SPLIT_FILES
from pipeline.demo.dynamics import MIMICRY_SCALE, mimicry_intensities
from pipeline.demo.render import TrackResult, TrackSpec, VideoSpec
from pipeline.tasks.definitions import MIMICRY_NAMES

MIMICRY_DIR = "Hume-Vidmimic2"
# Mix = Dirichlet(MIX_ALPHA) plus FAVOUR_BOOST on one reaction (in turn over the clips), renormalised:
# sparse mixes in which every reaction leads about equally often.
MIX_ALPHA = 0.5
FAVOUR_BOOST = 0.5

README = """Hume-Vidmimic2 part of the affectflow demo corpus (synthetic; `python -m stages.demo`)

A small stand-in for Hume-Vidmimic2 in its layout: {n_videos} short clips ({n_frames} frames, {fps} fps)
of the same synthetic identities as the Aff-Wild2 part (subjects.csv uses the same names), each showing a
person mimicking a mix of reactions: Admiration (mild smile with raised brows), Amusement (smile with
laughter), Determination (firm brows and pressed lips, neutral valence), Empathic Pain (sad brows and
mouth), Excitement (surprise with exclamations, high arousal) and Joy (smile).

train_split.csv / valid_split.csv: one row per clip, 6 intensities in [0, 1], computed from what was
rendered and voiced, per frame t averaged over the clip, with H, S, Sd, F the rendered drive (0..1) of
the smile, surprise, sadness and firm-face expressions, voice the share of voiced time around t, v / a
the valence / arousal:
  Admiration = mean(min(H, S))        / {s0}
  Amusement = mean(H * voice)          / {s1}
  Determination = mean(F * (1 - |v|))  / {s2}
  Empathic Pain = mean(Sd)             / {s3}
  Excitement = mean(max(a, 0) * max(S, voice)) / {s4}
  Joy = mean(H)                        / {s5}
each clipped to [0, 1] (the divisors map a clip showing only that reaction at full strength to ~0.8).
A person is in one split file only (the Aff-Wild2 part's identity split).

raw/<name>.mp4: the clips. audio/<name>.wav: 16 kHz mono synthetic voice, not normalised per file (pitch and
loudness follow arousal; a clip without vocal reaction holds only faint room tone). transcripts/<name>.txt:
one line matching the strongest reaction.

Numbers measured on this corpus say nothing about real-world performance.
"""


def video_names(n_videos: int) -> list[str]:
    """ "00001", "00002", ... (5 digits, more when needed)."""
    width = max(5, len(str(n_videos)))
    return [f"{k:0{width}d}" for k in range(1, n_videos + 1)]


def draw_mix(rng: np.random.Generator, favoured: int) -> np.ndarray:
    """[6] reaction weights summing to 1 (`MIMICRY_NAMES` order), with reaction `favoured` boosted."""
    mix = rng.dirichlet(np.full(len(MIMICRY_NAMES), MIX_ALPHA))
    mix[favoured] += FAVOUR_BOOST
    return mix / mix.sum()


def plan_mimicry_videos(
    rng: np.random.Generator,
    n_videos: int,
    n_identities: int,
    frames_per_video: int,
    frames_jitter: float,
    fps_choices: list[int],
    frame_width: int,
    frame_height: int,
) -> list[VideoSpec]:
    """The clips to render: one person each (identities in turn, shuffled), a mix from `draw_mix` with the
    favoured reaction going round all six, length frames_per_video +- frames_jitter."""
    people = rng.permutation(n_identities)
    lead = rng.permutation(len(MIMICRY_NAMES))
    specs = []
    for index, name in enumerate(video_names(n_videos)):
        fps = int(rng.choice(fps_choices))
        n_frames = max(10, int(round(frames_per_video * rng.uniform(1 - frames_jitter, 1 + frames_jitter))))
        mix = draw_mix(rng, int(lead[index % len(lead)]))
        track = TrackSpec(
            name, int(people[index % n_identities]), (0.5, 0.44), reaction=tuple(float(w) for w in mix)
        )
        specs.append(
            VideoSpec(
                index, name, RAW_DIR, ".mp4", "mp4v", fps, n_frames, frame_width, frame_height, (track,)
            )
        )
    return specs


def format_row(name: str, intensities: np.ndarray) -> str:
    """One split-file row: the name and the 6 intensities with 4 decimals."""
    return ",".join([name, *(f"{float(v):.4f}" for v in intensities)])


def write_mimicry(
    root: Path,
    specs: list[VideoSpec],
    results: list[list[TrackResult]],
    split_of: dict[int, str],
    subject_names: list[str],
) -> dict[str, object]:
    """Write the split files, subjects.csv and README of the rendered Hume-Vidmimic2 part under `root`.

    Args:
        root: `<out_dir>/Hume-Vidmimic2` (clips, audio and transcripts are already there).
        specs: the planned clips.
        results: `render_video`'s result per spec (one track each).
        split_of: identity index -> "Train_Set" / "Validation_Set" (the Aff-Wild2 part's split).
        subject_names: identity index -> name.

    Returns:
        Counts: videos, frames, train_videos, val_videos, and the labels' mean per dimension.
    """
    rows: dict[str, list[str]] = {split: [] for split in SPLIT_FILES}
    labels = []
    subjects = []
    for spec, (result,) in zip(specs, results, strict=True):
        values = mimicry_intensities(result.timeline, spec.fps)
        labels.append(values)
        rows[split_of[result.identity]].append(format_row(spec.name, values))
        subjects.append((spec.name, subject_names[result.identity]))
    for split, file_name in SPLIT_FILES.items():
        (root / file_name).write_text("\n".join([",".join(HEADER), *rows[split]]) + "\n")
    (root / "subjects.csv").write_text("track,subject\n" + "".join(f"{t},{s}\n" for t, s in subjects))
    n_frames = sum(s.n_frames for s in specs)
    fps = "/".join(str(f) for f in sorted({s.fps for s in specs}))
    scales = {f"s{i}": f"{s:g}" for i, s in enumerate(MIMICRY_SCALE)}
    (root / "README.txt").write_text(README.format(n_videos=len(specs), n_frames=n_frames, fps=fps, **scales))
    train, val = SPLIT_FILES
    return {
        "videos": len(specs),
        "frames": n_frames,
        "train_videos": len(rows[train]),
        "val_videos": len(rows[val]),
        "label_means": [round(float(m), 3) for m in np.mean(labels, axis=0)] if labels else [],
    }
