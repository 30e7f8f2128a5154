"""The built-in demo corpus: layout, determinism, label sanity, detectability, AU rendering, audio."""

from __future__ import annotations

import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from scipy.io import wavfile

from pipeline.datasets.affwild2 import video_name
from pipeline.demo import generate_corpus
from pipeline.demo.corpus import HEADERS, RAW_FOLDERS, SPLITS, TASK_DIRS
from pipeline.demo.dynamics import AU, EXPR, make_timeline
from pipeline.tasks.definitions import AU_NAMES

REPO = Path(__file__).resolve().parents[2]
# A tiny corpus: 3 identities x 1 video + one two-person video, ~50 frames each; every video gets a
# no-face stretch so the invalid markers are certain to appear.
TINY = dict(
    n_identities=3,
    videos_per_identity=1,
    two_person_videos=1,
    frames_per_video=50,
    frames_jitter=0.1,
    no_face_share=1.0,
    blur_share=0.5,
    avi_share=0.34,
    compound_videos=0,  # the C-EXPR-DB and Hume-Vidmimic2 parts: tests/demo/test_compound_mimicry.py
    mimicry_videos=0,
    progress=False,
)
AU_INVALID = ",".join(["-1"] * len(AU_NAMES))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Same seed twice (one serial, one with two worker processes) and a different seed."""
    base = tmp_path_factory.mktemp("demo")
    out = {"a": base / "a", "b": base / "b", "c": base / "c"}
    generate_corpus(out["a"], seed=11, workers=1, **TINY)
    generate_corpus(out["b"], seed=11, workers=2, **TINY)
    generate_corpus(out["c"], seed=12, workers=2, **TINY)
    return out


def _annotation_files(root: Path) -> list[Path]:
    return sorted(p for d in TASK_DIRS.values() for p in (root / d).glob("*/*.txt"))


def _videos(root: Path) -> dict[str, Path]:
    return {
        p.stem: p for folder in RAW_FOLDERS for p in (root / folder).glob("*") if p.suffix in (".mp4", ".avi")
    }


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


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def _subjects(root: Path) -> dict[str, str]:
    lines = (root / "subjects.csv").read_text().splitlines()
    assert lines[0] == "track,subject"
    return dict(line.split(",") for line in lines[1:])


def _face_mask(root: Path, track: str) -> np.ndarray:
    """[T] bool: frames labelled in the AU or VA file (no-face frames are invalid in every task)."""
    masks = []
    for task, invalid in (("au", AU_INVALID), ("va", "-5,-5")):
        for path in (root / TASK_DIRS[task]).glob(f"*/{track}.txt"):
            masks.append(np.array([row != invalid for row in _rows(path)]))
    assert masks, f"{track} has neither AU nor VA labels"
    return np.logical_or.reduce(masks)


def test_layout_and_headers(corpora):
    root = corpora["a"]
    for task, folder in TASK_DIRS.items():
        files = list((root / folder).glob("*/*.txt"))
        assert files, f"no {task} files"
        assert {p.parent.name for p in files} == set(SPLITS)
        for path in files:
            assert path.read_text().splitlines()[0] == HEADERS[task]
    assert HEADERS["expr"] == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    assert HEADERS["au"] == "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
    assert HEADERS["va"] == "valence,arousal"

    videos = _videos(root)
    assert len(videos) == 4
    assert {p.suffix for p in videos.values()} == {".mp4", ".avi"}
    assert {p.parent.name for p in videos.values()} <= set(RAW_FOLDERS)
    for name in videos:
        assert (root / "audio" / f"{name}.wav").is_file()
        lines = (root / "transcripts" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == 1 and len(lines[0]) > 10
    assert "synthetic" in (root / "README.txt").read_text()


def test_line_counts_match_decoded_frames(corpora):
    root = corpora["a"]
    videos = _videos(root)
    n_decoded = {name: len(_decode(path)) for name, path in videos.items()}
    for path in _annotation_files(root):
        assert len(path.read_text().splitlines()) == n_decoded[video_name(path.stem)] + 1, path


def test_values_and_invalid_markers(corpora):
    root = corpora["a"]
    seen_invalid = dict.fromkeys(TASK_DIRS, 0)
    for task, folder in TASK_DIRS.items():
        for path in (root / folder).glob("*/*.txt"):
            for row in _rows(path):
                if task == "expr":
                    assert int(row) in range(-1, 8)
                    seen_invalid[task] += row == "-1"
                elif task == "au":
                    values = row.split(",")
                    assert len(values) == 12
                    assert row == AU_INVALID or set(values) <= {"0", "1"}
                    seen_invalid[task] += row == AU_INVALID
                else:
                    v, a = (float(x) for x in row.split(","))
                    assert (v, a) == (-5, -5) or (-1 <= v <= 1 and -1 <= a <= 1)
                    seen_invalid[task] += row == "-5,-5"
    assert all(seen_invalid.values()), seen_invalid


def test_no_face_frames_invalid_in_every_task(corpora):
    root = corpora["a"]
    for path in (root / TASK_DIRS["au"]).glob("*/*.txt"):
        au_invalid = np.array([r == AU_INVALID for r in _rows(path)])
        for task in ("expr", "va"):
            for other in (root / TASK_DIRS[task]).glob(f"*/{path.stem}.txt"):
                marker = "-1" if task == "expr" else "-5,-5"
                other_invalid = np.array([r == marker for r in _rows(other)])
                assert not (au_invalid & ~other_invalid).any(), (
                    f"{other}: labelled frames where AU says no face"
                )


def test_two_person_tracks_and_subjects(corpora):
    root = corpora["a"]
    subjects = _subjects(root)
    tracks = {p.stem for p in _annotation_files(root)}
    assert tracks == set(subjects), "subjects.csv must cover exactly the annotated tracks"
    pairs = [t[: -len("_left")] for t in subjects if t.endswith("_left")]
    assert len(pairs) == 1
    video = pairs[0]
    assert f"{video}_right" in subjects
    assert subjects[f"{video}_left"] != subjects[f"{video}_right"]
    assert _videos(root)[video].suffix == ".mp4"
    assert (root / "audio" / f"{video}.wav").is_file()
    # Split by identity: no subject in both splits.
    split_of: dict[str, set[str]] = {}
    for path in _annotation_files(root):
        split_of.setdefault(subjects[path.stem], set()).add(path.parent.name)
    assert all(len(s) == 1 for s in split_of.values()), split_of
    assert {s for splits in split_of.values() for s in splits} == set(SPLITS)


def test_loader_reads_the_corpus(corpora):
    from pipeline.datasets.affwild2 import find_tracks

    root = corpora["a"]
    subjects = _subjects(root)
    tracks = find_tracks(root)
    assert {t.name for t in tracks} == set(subjects)
    assert all(t.subject == subjects[t.name] for t in tracks)


def test_same_seed_same_bytes_and_frames(corpora):
    a, b = corpora["a"], corpora["b"]
    files_a = [p.relative_to(a) for p in sorted(a.rglob("*")) if p.is_file()]
    files_b = [p.relative_to(b) for p in sorted(b.rglob("*")) if p.is_file()]
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix in (".txt", ".csv", ".wav"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for name, path in _videos(a).items():
        frames_a, frames_b = _decode(path), _decode(_videos(b)[name])
        assert len(frames_a) == len(frames_b) > 0
        assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b, strict=True)), name


def test_different_seed_differs(corpora):
    a, c = corpora["a"], corpora["c"]
    labels = lambda root: b"".join(p.read_bytes() for p in _annotation_files(root))  # noqa: E731
    assert labels(a) != labels(c)
    first_a = _decode(sorted(_videos(a).values())[0])[0]
    first_c = _decode(sorted(_videos(c).values())[0])[0]
    assert first_a.shape != first_c.shape or not np.array_equal(first_a, first_c)


def test_dlib_finds_the_faces(corpora):
    """dlib's HOG detector (no upsampling, full frame, as the faces stage runs it) on labelled frames."""
    from pipeline.demo.sources import face_detector

    root = corpora["a"]
    videos = _videos(root)
    hits = total = 0
    for track in sorted(_subjects(root)):
        frames = _decode(videos[video_name(track)])
        face = _face_mask(root, track)
        assert len(face) == len(frames)
        for k in np.flatnonzero(face)[::3]:
            rgb = cv2.cvtColor(frames[k], cv2.COLOR_BGR2RGB)
            rects = face_detector()(rgb, 0)
            half = rgb.shape[1] / 2
            if track.endswith("_left"):
                rects = [r for r in rects if r.center().x < half]
            elif track.endswith("_right"):
                rects = [r for r in rects if r.center().x >= half]
            hits += len(rects) > 0
            total += 1
    assert total >= 40
    assert hits / total >= 0.95, f"dlib found {hits}/{total} faces"


@pytest.fixture(scope="module")
def face():
    from pipeline.demo.expressions import build_rig
    from pipeline.demo.identities import build_identity, draw_recipes

    recipe = draw_recipes(1, np.random.default_rng(0))[0]
    identity = build_identity("subject01", recipe, 128.0)
    return identity, build_rig(identity)


def _render(face, **aus: float) -> np.ndarray:
    from pipeline.demo.expressions import render_expression

    identity, rig = face
    intensity = np.zeros(len(AU_NAMES), np.float32)
    for name, value in aus.items():
        intensity[AU[name]] = value
    return render_expression(identity, rig, intensity).astype(np.float32)


def test_aus_move_the_right_part_of_the_face(face):
    identity, _ = face
    neutral = _render(face)
    assert np.array_equal(_render(face, AU12=0.0), neutral)
    lm = identity.landmarks
    eye_y = int(lm[36:48, 1].mean())
    nose_y = int(lm[33, 1])

    def upper_lower(img: np.ndarray) -> tuple[float, float]:
        diff = np.abs(img - neutral).sum(-1)
        return float(diff[:eye_y].sum()), float(diff[nose_y:].sum())

    upper, lower = upper_lower(_render(face, AU6=1.0, AU12=1.0))
    assert lower > 2 * upper > 0, (upper, lower)  # a smile moves mostly the lower face (AU6 lifts the lids)
    upper, lower = upper_lower(_render(face, AU12=1.0))
    assert lower > 5 * upper, (upper, lower)
    upper, lower = upper_lower(_render(face, AU1=1.0, AU2=1.0))
    assert upper > 3 * lower, (upper, lower)  # raised brows move the upper face
    upper, lower = upper_lower(_render(face, AU4=1.0))
    assert upper > 3 * lower, (upper, lower)


def test_open_mouth_is_dark_inside(face):
    from pipeline.demo.expressions import moved_landmarks

    identity, _ = face
    intensity = np.zeros(len(AU_NAMES))
    intensity[[AU["AU25"], AU["AU26"]]] = 1.0
    lm = moved_landmarks(identity, intensity)
    top, bottom = lm[62, 1], lm[66, 1]
    assert bottom - top > 10  # the lips part by several pixels
    # Lower part of the opening (the upper part shows teeth).
    y0, y1 = int(top + 0.55 * (bottom - top)), int(top + 0.9 * (bottom - top))
    x0, x1 = int(lm[60, 0]) + 5, int(lm[64, 0]) - 5
    closed = _render(face)[y0:y1, x0:x1].mean()
    opened = _render(face, AU25=1.0, AU26=1.0)[y0:y1, x0:x1].mean()
    assert opened < 0.5 * closed, (closed, opened)


def test_labels_follow_the_prototypes():
    rng = np.random.default_rng(5)
    timelines = [make_timeline(1500, 25.0, rng) for _ in range(6)]
    expr = np.concatenate([t.expr for t in timelines])
    au = np.concatenate([t.au for t in timelines])
    va = np.concatenate([t.va for t in timelines])
    assert set(np.unique(expr)) >= {0, 1, 2, 3, 4, 5, 6, 7}

    def au_rate(cls: str, name: str) -> float:
        return float(au[expr == EXPR[cls], AU[name]].mean())

    assert au_rate("Happiness", "AU12") > 0.8 and au_rate("Happiness", "AU6") > 0.8
    assert au_rate("Surprise", "AU1") > 0.8 and au_rate("Surprise", "AU26") > 0.8
    assert au_rate("Anger", "AU4") > 0.8 and au_rate("Sadness", "AU15") > 0.8
    assert au_rate("Happiness", "AU4") < 0.2

    def mean_va(cls: str) -> np.ndarray:
        return va[expr == EXPR[cls]].mean(0)

    assert mean_va("Happiness")[0] > 0.3 > mean_va("Neutral")[0] > mean_va("Sadness")[0]
    assert mean_va("Anger")[0] < -0.2 and mean_va("Anger")[1] > mean_va("Sadness")[1] + 0.4
    assert np.abs(va).max() <= 1
    # Smooth: frame-to-frame steps are small next to the range covered.
    assert np.abs(np.diff(timelines[0].va, axis=0)).mean() < 0.05


def test_audio_matches_video(corpora):
    root = corpora["a"]
    for name, path in _videos(root).items():
        rate, samples = wavfile.read(root / "audio" / f"{name}.wav")
        cap = cv2.VideoCapture(str(path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        n_frames = len(_decode(path))
        assert rate == 16000 and samples.ndim == 1 and samples.dtype == np.int16
        assert abs(len(samples) / rate - n_frames / fps) < 1 / fps
        assert np.abs(samples).max() > 1000  # a voice, not silence


def test_params_file_fits_generate_corpus(tmp_path, capsys, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())["demo"]
    assert "seed" in params
    inspect.signature(generate_corpus).bind(tmp_path, **params)  # every key is a keyword it takes

    import stages.demo
    from stages.demo import main

    def tiny_parts(out_dir, **kwargs):
        # One short C-EXPR-DB and one Hume-Vidmimic2 video, whatever the params file says (or lacks).
        sizes = dict(compound_videos=1, compound_frames=12, mimicry_videos=1, mimicry_frames=12)
        return generate_corpus(out_dir, **{**kwargs, **sizes})

    monkeypatch.setattr(stages.demo, "generate_corpus", tiny_parts)

    tiny = {
        **params,
        # Only keys the params file has: the stage's config reader may not know the others.
        **{k: v for k, v in TINY.items() if k in params},
        "n_identities": 2,
        "frames_per_video": 30,
    }
    # The stage reads the whole file through load_config: every section must be there.
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**full, "demo": tiny}))
    assert main(["--out", str(tmp_path / "demo"), "--params", str(tmp_path / "params.yaml")]) == 0
    assert "identities" in capsys.readouterr().out
    assert (tmp_path / "demo" / "subjects.csv").is_file()
    assert (tmp_path / "demo" / "C-EXPR-DB" / "annotations" / "01.txt").is_file()
    assert (tmp_path / "demo" / "Hume-Vidmimic2" / "raw" / "00001.mp4").is_file()
