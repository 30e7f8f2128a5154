"""The demo corpus's C-EXPR-DB and Hume-Vidmimic2 parts: layout, labels, readers, and an unchanged
Aff-Wild2 part."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from pipeline.datasets import cexpr, mimicry
from pipeline.demo import generate_corpus
from pipeline.demo.compound import CEXPR_DIR, favoured_classes, plan_compound_videos, video_names
from pipeline.demo.corpus import TASK_DIRS
from pipeline.demo.dynamics import (
    AU,
    BASIC,
    COMPOUND_PARTS,
    EXPR,
    PROTOTYPES,
    make_compound_timeline,
    make_reaction_timeline,
    mimicry_intensities,
)
from pipeline.demo.mimicry import MIMICRY_DIR, plan_mimicry_videos
from pipeline.tasks import definitions
from pipeline.tasks.definitions import COMPOUND_CLASSES, MIMICRY_NAMES

# 3 identities x one 12-frame Aff-Wild2 video; 3 C-EXPR-DB videos and 4 Hume-Vidmimic2 clips of ~20 frames.
SMALL = dict(
    n_identities=3,
    videos_per_identity=1,
    two_person_videos=0,
    frames_per_video=12,
    frames_jitter=0.1,
    no_face_share=0.5,
    progress=False,
    workers=2,
)
NEW_PARTS = dict(compound_videos=3, compound_frames=20, mimicry_videos=4, mimicry_frames=20)
MIMICRY_HEADER = "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict:
    """The same seed with the new parts on and off."""
    base = tmp_path_factory.mktemp("parts")
    on = generate_corpus(base / "on", seed=5, **SMALL, **NEW_PARTS)
    off = generate_corpus(base / "off", seed=5, **SMALL, compound_videos=0, mimicry_videos=0)
    return {"on": base / "on", "off": base / "off", "summary_on": on, "summary_off": off}


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _affwild2_split_of_subject(root: Path) -> dict[str, str]:
    """subject -> split in the Aff-Wild2 part (from its label folders and subjects.csv)."""
    subjects = dict(_csv(root / "subjects.csv")[1:])
    out = {}
    for folder in TASK_DIRS.values():
        for path in (root / folder).glob("*/*.txt"):
            out[subjects[path.stem]] = path.parent.name
    return out


def test_compound_layout_and_labels(corpora):
    root = corpora["on"] / CEXPR_DIR
    names = ["01", "02", "03"]
    assert sorted(p.stem for p in (root / "videos").glob("*.mp4")) == names
    assert sorted(p.stem for p in (root / "annotations").glob("*.txt")) == names
    seen = set()
    for name in names:
        lines = (root / "annotations" / f"{name}.txt").read_text().splitlines()
        assert lines[0] == ",".join(COMPOUND_CLASSES)
        frames = _decode(root / "videos" / f"{name}.mp4")
        assert frames[0].shape == (256, 320, 3)
        assert len(lines) == len(frames) + 1
        values = [int(v) for v in lines[1:]]
        assert set(values) <= set(range(-1, 7))
        assert -1 in values  # neutral lead-in at least
        seen |= set(values)
    assert seen - {-1}, "no compound frame labelled at all"
    subjects = _csv(root / "subjects.csv")
    assert subjects[0] == ["track", "subject"]
    assert [row[0] for row in subjects[1:]] == names
    # The same people as the Aff-Wild2 part.
    assert {row[1] for row in subjects[1:]} <= set(_affwild2_split_of_subject(corpora["on"]))
    assert "synthetic" in (root / "README.txt").read_text()
    assert not (root / "audio").exists()
    summary = corpora["summary_on"]["compound"]
    assert summary["videos"] == 3 and summary["labelled_frames"] == sum(summary["class_frames"])


def test_mimicry_layout_labels_and_split(corpora):
    root = corpora["on"] / MIMICRY_DIR
    split_of = _affwild2_split_of_subject(corpora["on"])
    subject_of = dict(_csv(root / "subjects.csv")[1:])
    rows = {}
    for split, file_name in mimicry.SPLIT_FILES.items():
        lines = (root / file_name).read_text().splitlines()
        assert lines[0] == MIMICRY_HEADER
        for line in lines[1:]:
            name, *values = line.split(",")
            assert len(name) == 5 and name.isdigit()
            assert all(len(v.split(".")[1]) == 4 and 0 <= float(v) <= 1 for v in values), line
            assert split_of[subject_of[name]] == split  # a person is in the split of the Aff-Wild2 part
            rows[name] = values
    assert sorted(rows) == ["00001", "00002", "00003", "00004"] == sorted(subject_of)
    for name in rows:
        frames = _decode(root / "raw" / f"{name}.mp4")
        assert frames[0].shape == (256, 320, 3)
        cap = cv2.VideoCapture(str(root / "raw" / f"{name}.mp4"))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        rate, samples = wavfile.read(root / "audio" / f"{name}.wav")
        assert rate == 16000 and samples.ndim == 1 and samples.dtype == np.int16
        assert abs(len(samples) / rate - len(frames) / fps) < 1 / fps
        assert len((root / "transcripts" / f"{name}.txt").read_text().strip()) > 10
    summary = corpora["summary_on"]["mimicry"]
    assert summary["videos"] == 4 and summary["train_videos"] + summary["val_videos"] == 4


def test_readers_read_the_demo_parts(corpora):
    root = corpora["on"] / CEXPR_DIR
    tracks = cexpr.find_tracks(root)
    assert [t.name for t in tracks] == ["01", "02", "03"]
    assert all(t.subject_known and t.subject.startswith("subject") for t in tracks)
    for track in tracks:
        labels = cexpr.read_labels(track.label_files["ce"])
        assert len(labels) == len(_decode(cexpr.find_video(root, track.video)))

    root = corpora["on"] / MIMICRY_DIR
    tracks = mimicry.find_tracks(root)
    values = mimicry.read_intensities(root)
    assert [t.name for t in tracks] == sorted(values) == ["00001", "00002", "00003", "00004"]
    assert all(t.subject_known for t in tracks)
    for track in tracks:
        assert mimicry.find_video(root, track.video).suffix == ".mp4"
        assert mimicry.find_audio(root, track.video).suffix == ".wav"


def test_affwild2_part_unchanged_by_the_new_parts(corpora):
    on, off = corpora["on"], corpora["off"]
    files_off = sorted(p.relative_to(off) for p in off.rglob("*") if p.is_file())
    files_on = sorted(
        p.relative_to(on)
        for p in on.rglob("*")
        if p.is_file() and p.relative_to(on).parts[0] not in (CEXPR_DIR, MIMICRY_DIR)
    )
    assert files_on == files_off
    for rel in files_off:
        if rel.suffix in (".mp4", ".avi"):
            frames_on, frames_off = _decode(on / rel), _decode(off / rel)
            assert len(frames_on) == len(frames_off) > 0
            assert all(np.array_equal(a, b) for a, b in zip(frames_on, frames_off, strict=True)), rel
        else:
            assert (on / rel).read_bytes() == (off / rel).read_bytes(), rel
    summary_on = {k: v for k, v in corpora["summary_on"].items() if k not in ("compound", "mimicry")}
    summary_off = {k: v for k, v in corpora["summary_off"].items() if k not in ("compound", "mimicry")}
    assert summary_on == summary_off
    assert corpora["summary_off"]["compound"] is None and corpora["summary_off"]["mimicry"] is None
    assert not (off / CEXPR_DIR).exists() and not (off / MIMICRY_DIR).exists()


# ---------------------------------------------------------------- planning and labelling, no rendering


def test_compound_names_and_favoured_classes():
    assert video_names(3) == ["01", "02", "03"]
    assert video_names(120)[0] == "001" and video_names(120)[-1] == "120"
    for seed in range(20):
        favour = favoured_classes(5, np.random.default_rng(seed))
        assert all(1 <= len(f) <= 2 and len(set(f)) == len(f) for f in favour)
        assert {c for f in favour for c in f} == set(COMPOUND_CLASSES)
        counts = Counter(c for f in favoured_classes(10, np.random.default_rng(seed)) for c in f)
        assert min(counts[c] for c in COMPOUND_CLASSES) >= 2


def test_compound_plan_shows_every_class():
    specs = plan_compound_videos(np.random.default_rng([3, 10]), 10, 12, 90, 0.2, [25, 30], 320, 256)
    assert [s.name for s in specs] == video_names(10)
    assert len({s.tracks[0].identity for s in specs}) == 10  # people in turn
    assert all((s.width, s.height, s.folder, s.ext) == (320, 256, "videos", ".mp4") for s in specs)
    shown = np.zeros(len(COMPOUND_CLASSES), int)
    for spec in specs:
        tl = make_compound_timeline(
            spec.n_frames, spec.fps, np.random.default_rng(spec.index), spec.tracks[0].compound
        )
        labels = tl.compound[tl.compound >= 0]
        shown += np.bincount(labels, minlength=len(COMPOUND_CLASSES))
        assert {COMPOUND_CLASSES[c] for c in labels} >= set(spec.tracks[0].compound)  # favoured ones show
    assert (shown >= 5).all(), shown  # every class well represented


@pytest.mark.parametrize("cls", COMPOUND_CLASSES)
def test_compound_episodes_blend_both_prototypes(cls: str):
    tl = make_compound_timeline(750, 25.0, np.random.default_rng(1), (cls,))
    labelled = tl.compound == COMPOUND_CLASSES.index(cls)
    assert labelled.sum() > 10
    first, second = COMPOUND_PARTS[cls]
    # Apex frames of this class's episodes: every core AU of both basic prototypes is on.
    apex = labelled & (tl.envelopes[:, BASIC[first]] > 0.6)
    assert apex.sum() > 5
    for name in set(PROTOTYPES[first][0]) | set(PROTOTYPES[second][0]):
        assert tl.intensity[apex, AU[name]].mean() > 0.4, name
    np.testing.assert_array_equal(tl.envelopes[labelled, BASIC[first]], tl.envelopes[labelled, BASIC[second]])
    assert (tl.expr[tl.compound >= 0] == EXPR["Other"]).all()
    # Neutral gaps: unlabelled frames between episodes, with no expression drive at all somewhere.
    gaps = np.flatnonzero(np.diff((tl.compound >= 0).astype(int)) != 0)
    assert len(gaps) >= 4 and (tl.envelopes.max(axis=1) == 0).any()


def test_compound_valence_follows_the_blend():
    def mean_valence(cls: str) -> float:
        tl = make_compound_timeline(750, 25.0, np.random.default_rng(2), (cls,))
        return float(tl.va[tl.compound == COMPOUND_CLASSES.index(cls), 0].mean())

    assert (
        mean_valence("Happily_Surprised")
        > 0.2
        > mean_valence("Sadly_Surprised")
        > mean_valence("Sadly_Angry")
    )


def test_compound_parts_match_the_task_definitions():
    pairs = getattr(definitions, "COMPOUND_PAIRS", None)
    if pairs is None:
        pytest.skip("pipeline.tasks.definitions has no COMPOUND_PAIRS")
    assert tuple(COMPOUND_PARTS.values()) == tuple(pairs)


def _mimicry_labels(n_videos: int, seed: int) -> np.ndarray:
    specs = plan_mimicry_videos(np.random.default_rng([seed, 12]), n_videos, 12, 50, 0.2, [25, 30], 320, 256)
    out = []
    for spec in specs:
        tl = make_reaction_timeline(
            spec.n_frames, spec.fps, np.random.default_rng([seed, 13, spec.index]), spec.tracks[0].reaction
        )
        out.append(mimicry_intensities(tl, spec.fps))
    return np.array(out)


@pytest.mark.parametrize("seed", [7, 8])
def test_mimicry_labels_vary_and_are_not_collinear(seed: int):
    labels = _mimicry_labels(36, seed)
    assert labels.shape == (36, 6) and labels.dtype == np.float32
    assert labels.min() >= 0 and labels.max() <= 1
    assert (labels.std(axis=0) > 0.1).all(), labels.std(axis=0)
    r = np.corrcoef(labels.T)
    np.fill_diagonal(r, 0)
    assert np.abs(r).max() < 0.95, r


def _pure(name: str, seed: int = 0, n: int = 50, fps: float = 25.0):
    mix = np.zeros(len(MIMICRY_NAMES))
    mix[MIMICRY_NAMES.index(name)] = 1.0
    return make_reaction_timeline(n, fps, np.random.default_rng(seed), mix)


def test_mimicry_labels_follow_what_is_shown():
    label = {name: i for i, name in enumerate(MIMICRY_NAMES)}
    for seed in range(4):
        joy = mimicry_intensities(_pure("Joy", seed), 25.0)
        assert (
            joy[label["Joy"]] > 0.5 and joy[label["Empathic Pain"]] == 0 and joy[label["Determination"]] == 0
        )
        pain = mimicry_intensities(_pure("Empathic Pain", seed), 25.0)
        assert (
            pain[label["Empathic Pain"]] > 0.5 and pain[label["Joy"]] == 0 and pain[label["Admiration"]] == 0
        )
        firm = mimicry_intensities(_pure("Determination", seed), 25.0)
        assert firm[label["Determination"]] > 0.4 and firm.argmax() == label["Determination"]
        excited = _pure("Excitement", seed)
        assert excited.syllables  # exclamations are heard
        assert mimicry_intensities(excited, 25.0)[label["Excitement"]] > 0.4
        amused = _pure("Amusement", seed)
        laughs = [s for s in amused.syllables if s.end - s.start <= 0.16 and s.vowel in "aeo"]
        assert len(laughs) >= 3  # short open-vowel bursts
        assert mimicry_intensities(amused, 25.0)[label["Amusement"]] > 0.3


def test_mimicry_labels_come_from_the_rendering_not_the_mix():
    tl = _pure("Joy")
    before = mimicry_intensities(tl, 25.0)
    tl.envelopes[:] = 0  # nothing shown on the face
    after = mimicry_intensities(tl, 25.0)
    assert before[MIMICRY_NAMES.index("Joy")] > 0.5 and after[MIMICRY_NAMES.index("Joy")] == 0
    # The same mix rendered twice (different draws) gives different labels.
    mix = np.full(len(MIMICRY_NAMES), 1 / 6)
    a = mimicry_intensities(make_reaction_timeline(50, 25.0, np.random.default_rng(1), mix), 25.0)
    b = mimicry_intensities(make_reaction_timeline(50, 25.0, np.random.default_rng(2), mix), 25.0)
    assert not np.allclose(a, b)
