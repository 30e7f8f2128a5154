"""Render one demo video (frames, audio, transcript) and return its tracks' ground truth.

The same renderer makes the Aff-Wild2 part and the C-EXPR-DB / Hume-Vidmimic2 parts of the demo corpus: a
track's `compound` or `reaction` field picks the timeline generator, `RenderOptions` where the files go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.demo import audio, scene, transcripts
from pipeline.demo.dynamics import (
    Timeline,
    make_compound_timeline,
    make_reaction_timeline,
    make_timeline,
    mimicry_intensities,
)
from pipeline.demo.expressions import Rig, render_expression
from pipeline.demo.identities import Identity, sprite_geometry


@dataclass(frozen=True)
class TrackSpec:
    """One person in a video.

    Attributes:
        name: track name (the video name, or `<video>_left` / `<video>_right`).
        identity: index into the identity list.
        anchor: (x, y) of the eye centre as fractions of the frame size.
        scale: size of the person relative to the corpus face box.
        fade_sides: fade the sprite out towards its left and right edges instead of extending its edge
            pixels (two people side by side: one's shoulders must not smear across the other's half).
        mood: expression favoured in this track's episodes (None: drawn at random).
        compound: compound classes favoured by a C-EXPR-DB track (`dynamics.make_compound_timeline`);
            empty for other tracks.
        reaction: [6] mimicry mix of a Hume-Vidmimic2 track (`dynamics.make_reaction_timeline`, in
            `MIMICRY_NAMES` order); empty for other tracks.
    """

    name: str
    identity: int
    anchor: tuple[float, float]
    scale: float = 1.0
    fade_sides: bool = False
    mood: str | None = None
    compound: tuple[str, ...] = ()
    reaction: tuple[float, ...] = ()


@dataclass(frozen=True)
class VideoSpec:
    """One raw video to render.

    Attributes:
        index: position in the corpus plan (seeds the video's generator).
        name: video name (file stem).
        folder: raw-video folder (batch1, batch2, videos, new_vids; `videos` / `raw` in the other parts).
        ext: ".mp4" or ".avi".
        fourcc: codec tag for cv2.VideoWriter.
        fps: frame rate.
        n_frames: frames to write.
        width, height: frame size.
        tracks: the people in it.
    """

    index: int
    name: str
    folder: str
    ext: str
    fourcc: str
    fps: int
    n_frames: int
    width: int
    height: int
    tracks: tuple[TrackSpec, ...]


@dataclass
class TrackResult:
    """Ground truth of one rendered track.

    Attributes:
        track: track name.
        identity: identity index.
        timeline: labels (before no-face masking).
        visible: [T] bool, the whole face is in the frame.
    """

    track: str
    identity: int
    timeline: Timeline
    visible: np.ndarray


@dataclass(frozen=True)
class RenderOptions:
    """Corpus-wide knobs the frame loop needs, and where one part of the corpus goes.

    Attributes:
        stream: second entry of each video's generator seed [seed, stream, index]: one stream per corpus
            part, so adding a part never changes another part's videos.
        subdir: the part's folder under out_dir ("" for the Aff-Wild2 part at the root).
        sidecars: write audio/<name>.wav and transcripts/<name>.txt next to the videos.
        absolute_level: write the audio at its synthesised level (`audio.write_wav`) instead of scaling
            each file to the same peak.
    """

    seed: int
    face_box: float
    max_roll: float
    no_face_share: float
    blur_share: float
    audio_rate: int
    stream: int = 3
    subdir: str = ""
    sidecars: bool = True
    absolute_level: bool = False


def _face_visible(m: np.ndarray, lm: np.ndarray, width: int, height: int) -> bool:
    """Brows, eyes, nose and mouth (dlib points 17-67) inside the frame under sprite->frame affine m.

    The jaw line may be cut by the frame edge: annotators still label such a face, and dlib still finds it.
    """
    pts = lm[17:] @ m[:, :2].T + m[:, 2]
    return bool(
        (pts[:, 0] >= 2).all()
        and (pts[:, 0] <= width - 3).all()
        and (pts[:, 1] >= 2).all()
        and (pts[:, 1] <= height - 3).all()
    )


def _out_of_frame(m: np.ndarray, sprite_w: int, height: int) -> bool:
    """The sprite's top edge (hair) is below the frame: nothing of the person shows."""
    top = np.array([[0.0, 0.0], [sprite_w - 1.0, 0.0]]) @ m[:, :2].T + m[:, 2]
    return bool(top[:, 1].min() > height)


def render_video(
    spec: VideoSpec, identities: list[Identity], rigs: list[Rig], out_dir: Path, opts: RenderOptions
) -> list[TrackResult]:
    """Write `<out_dir>/<subdir>/<folder>/<name><ext>` and, with `opts.sidecars`, `<subdir>/audio/<name>.wav`
    and `<subdir>/transcripts/<name>.txt`.

    Returns:
        Ground truth per track, in spec.tracks order.
    """
    rng = np.random.default_rng([opts.seed, opts.stream, spec.index])
    out_dir = out_dir / opts.subdir
    n, fps, w, h = spec.n_frames, spec.fps, spec.width, spec.height

    # No-face stretch: one person ducks out of view, or the video cuts to an empty shot.
    leave, cut = (0, 0), (0, 0)
    leaver = int(rng.integers(len(spec.tracks)))
    if rng.random() < opts.no_face_share:
        stretch = scene.stretch(n, fps, rng, 0.4, 1.0)
        if rng.random() < 0.5:
            leave = stretch
        else:
            cut = stretch
    camera = scene.make_camera(n, fps, h, w, rng, opts.blur_share, cut)

    # Two people take turns to speak.
    talk_turns: list[np.ndarray | None] = [None] * len(spec.tracks)
    if len(spec.tracks) > 1:
        turn = (np.arange(n) // int(rng.uniform(2.0, 4.0) * fps)) % len(spec.tracks)
        talk_turns = [turn == i for i in range(len(spec.tracks))]
    timelines = [_timeline(track, n, fps, rng, talk_turns[i]) for i, track in enumerate(spec.tracks)]

    people = []
    for i, track in enumerate(spec.tracks):
        ident = identities[track.identity]
        sw, _, _, eye_y = sprite_geometry(opts.face_box)
        anchor_sprite = (sw / 2, eye_y)
        anchor_frame = (track.anchor[0] * w, track.anchor[1] * h)
        pose = scene.head_path(n, fps, rng, opts.max_roll, leave if i == leaver else (0, 0), drop=1.6 * h)
        # RGBA sprite buffer reused every frame: only the face region changes.
        alpha = ident.alpha
        border = cv2.BORDER_REPLICATE  # a single person's shoulders continue past the sprite's edges
        if track.fade_sides:
            ramp = np.clip(np.minimum(np.arange(sw), sw - 1 - np.arange(sw)) / (0.15 * sw), 0, 1)
            alpha = alpha * (ramp * ramp * (3 - 2 * ramp))[None, :]
            border = cv2.BORDER_CONSTANT  # transparent outside the sprite
        rgba = np.dstack([ident.image, np.round(alpha * 255).astype(np.uint8)])
        people.append(
            (ident, rigs[track.identity], anchor_sprite, anchor_frame, pose, track.scale, rgba, border)
        )

    path = out_dir / spec.folder / f"{spec.name}{spec.ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*spec.fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path} with fourcc {spec.fourcc}")
    visible = np.zeros((len(spec.tracks), n), bool)
    side = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
    try:
        for t in range(n):
            px, py = camera.pan[t]
            if camera.cut[t]:
                frame = camera.cut_background[py : py + h, px : px + w].copy()
            else:
                frame = camera.background[py : py + h, px : px + w].copy()
                for i, (ident, rig, a_s, a_f, pose, scale, rgba, border) in enumerate(people):
                    mat = scene.pose_matrix(a_s, a_f, pose[t], scale)
                    if _out_of_frame(mat, ident.image.shape[1], h):
                        continue
                    visible[i, t] = _face_visible(mat, ident.landmarks, w, h)
                    render_expression(ident, rig, timelines[i].intensity[t], out=rgba)
                    warped = cv2.warpAffine(
                        rgba, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0
                    )
                    alpha = warped[..., 3:].astype(np.float32) / 255
                    frame += alpha * (warped[..., :3].astype(np.float32) - frame)
            frame *= camera.gain[t] * (1 + camera.side_light[t] * side)
            if camera.blur[t] > 0.3:
                frame = cv2.GaussianBlur(frame, (0, 0), float(camera.blur[t]))
            frame += camera.noise[camera.noise_index[t]]
            rgb = np.clip(frame, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()

    results = [
        TrackResult(tr.name, tr.identity, tl, visible[i])
        for i, (tr, tl) in enumerate(zip(spec.tracks, timelines, strict=True))
    ]
    if not opts.sidecars:
        return results

    # Audio: each speaker's voice follows their arousal; same duration as the video.
    n_samples = int(round(n / fps * opts.audio_rate))
    voices = [
        audio.synthesize_voice(
            n_samples, opts.audio_rate, tl.syllables, tl.va[:, 1], fps, identities[tr.identity].f0, rng
        )
        for tl, tr in zip(timelines, spec.tracks, strict=True)
    ]
    audio.write_wav(out_dir / "audio" / f"{spec.name}.wav", voices, opts.audio_rate, rng, opts.absolute_level)

    if spec.tracks[0].reaction:
        text = transcripts.reaction_line(mimicry_intensities(timelines[0], fps), rng)
    else:
        exprs = [np.where(visible[i], tl.expr, -1) for i, tl in enumerate(timelines)]
        text = transcripts.transcript_line(exprs, rng)
    (out_dir / "transcripts").mkdir(parents=True, exist_ok=True)
    (out_dir / "transcripts" / f"{spec.name}.txt").write_text(text + "\n")
    return results


def _timeline(
    track: TrackSpec, n: int, fps: int, rng: np.random.Generator, talk_allowed: np.ndarray | None
) -> Timeline:
    """The track's ground truth from the generator its spec asks for."""
    if track.compound:
        return make_compound_timeline(n, fps, rng, track.compound, talk_allowed=talk_allowed)
    if track.reaction:
        return make_reaction_timeline(n, fps, rng, track.reaction)
    return make_timeline(n, fps, rng, mood=track.mood, talk_allowed=talk_allowed)
