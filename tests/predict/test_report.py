"""What `affectflow predict` shows: the summary numbers, the annotated video, the HTML report."""

from __future__ import annotations

import base64
import math
import re

import cv2
import numpy as np
import polars as pl
import pytest

from pipeline.predict.annotate import write_annotated_video
from pipeline.predict.report import write_report
from pipeline.predict.summary import EXPRESSIONS, summarise
from pipeline.predict.table import table_schema
from pipeline.tasks.definitions import get_tasks

FPS = 2.0  # timestamps = frame / 2 in the hand-made tables


def build(tasks: list[str], columns: dict[str, list]) -> pl.DataFrame:
    """A prediction table with the schema of `tasks`; columns not given are null."""
    schema = table_schema(get_tasks(tasks))
    n = len(columns["frame"])
    unknown = set(columns) - set(schema)
    assert not unknown, f"not in the schema: {unknown}"
    data = {name: columns.get(name, [None] * n) for name in schema}
    data["timestamp"] = [f / FPS for f in columns["frame"]]
    return pl.DataFrame(data, schema=schema)


def expression_probabilities(labels: list[str]) -> dict[str, list[float]]:
    """0.72 on the label's class, 0.04 on each other class (each row sums to 1)."""
    return {name: [0.72 if label.lower() == name else 0.04 for label in labels] for name in EXPRESSIONS}


def two_people() -> pl.DataFrame:
    """4 frames x 2 people. Person 0: found on frames 0, 1, 3 (frame 2 filled, box kept); person 1 never.

    Over person 0's found rows (frames 0, 1, 3): expressions Happiness, Happiness, Sadness; valence 0.5,
    0.1, -0.3 (mean 0.1, sd sqrt(0.32 / 3)); arousal 0.2 throughout; AU01_c 1, 0, 1; AU02_c 0, 0, 0.
    The filled frame 2 says Neutral, valence 0.9, AU01_c 0, AU02_c 1: it must not count.
    """
    labels = ["Happiness", "Happiness", "Neutral", "Sadness"] + ["Neutral"] * 4
    au_names = [f"AU{int(a[2:]):02d}" for a in get_tasks(["au"])[0].class_names]
    aus: dict[str, list] = {}
    for name in au_names:
        aus[name] = [0.5] * 8
        aus[f"{name}_c"] = [0] * 8
    aus["AU01_c"] = [1, 0, 0, 1, 1, 1, 1, 1]  # person 1's 1s are priors: never counted
    aus["AU02_c"] = [0, 0, 1, 0, 0, 0, 0, 0]
    return build(
        ["expr", "au", "va", "emi"],
        {
            "video": ["clip"] * 8,
            "frame": [0, 1, 2, 3] * 2,
            "face_id": [0] * 4 + [1] * 4,
            "face_found": [True, True, False, True] + [False] * 4,
            "face_filled": [False, False, True, False] + [False] * 4,
            "face_rejected": [False] * 8,
            "face_reason": [None, None, "blurred", None] + ["no_face"] * 4,
            "outputs_from": ["face", "face", "filled", "face"] + ["prior"] * 4,
            "FaceRectX": [10.0, 11.0, 12.0, 13.0] + [None] * 4,
            "FaceRectY": [20.0] * 4 + [None] * 4,
            "FaceRectWidth": [40.0] * 4 + [None] * 4,
            "FaceRectHeight": [40.0] * 4 + [None] * 4,
            **expression_probabilities(labels),
            "expression": labels,
            **aus,
            "valence": [0.5, 0.1, 0.9, -0.3] + [0.0] * 4,
            "arousal": [0.2, 0.2, 0.2, 0.2] + [0.0] * 4,
            **{f"mimicry_{m}": [0.25] * 4 + [0.5] * 4 for m in ("admiration", "amusement", "determination")},
            **{f"mimicry_{m}": [0.1] * 8 for m in ("empathic_pain", "excitement", "joy")},
        },
    )


def nobody(n: int = 4) -> pl.DataFrame:
    """A video where nobody was found (as `pipeline.predict.video` writes it): null face_id, no outputs."""
    return build(
        ["expr", "au", "va"],
        {
            "video": ["empty"] * n,
            "frame": list(range(n)),
            "face_found": [False] * n,
            "face_filled": [False] * n,
            "face_rejected": [False] * n,
            "face_reason": ["no_face"] * n,
            "outputs_from": ["none"] * n,
        },
    )


# --- summary ----------------------------------------------------------------------------------------------


def test_summary_numbers_against_a_hand_computed_table():
    summary = summarise(two_people())
    assert summary["video"] == "clip"
    assert summary["frames"] == 4 and summary["people"] == 2
    assert summary["fps"] == pytest.approx(FPS) and summary["seconds"] == pytest.approx(2.0)
    assert summary["basis"] == "face_found"
    assert summary["tasks"] == ["expr", "au", "va", "emi"]

    p0, p1 = summary["persons"]
    assert p0["face_id"] == 0 and p0["frames"] == 4
    assert p0["detection_rate"] == pytest.approx(0.75)
    assert p0["filled_rate"] == pytest.approx(0.25)
    assert p0["frames_with_face"] == 3
    shares = p0["expression_share"]
    assert list(shares) == list(EXPRESSIONS)  # every class, in class order
    assert shares["happiness"] == pytest.approx(2 / 3) and shares["sadness"] == pytest.approx(1 / 3)
    assert shares["neutral"] == 0.0  # the filled frame's Neutral does not count
    assert p0["expression_top"] == "happiness"
    assert p0["valence_mean"] == pytest.approx(0.1)
    assert p0["valence_sd"] == pytest.approx(math.sqrt(0.32 / 3))
    assert p0["arousal_mean"] == pytest.approx(0.2) and p0["arousal_sd"] == pytest.approx(0.0, abs=1e-7)
    assert p0["au_rate"]["AU01"] == pytest.approx(2 / 3)
    assert p0["au_rate"]["AU02"] == 0.0
    assert len(p0["au_rate"]) == 12
    assert p0["mimicry"]["admiration"] == pytest.approx(0.25) and p0["mimicry"]["joy"] == pytest.approx(0.1)
    assert p0["compound_share"] is None and p0["compound_dominant"] is None  # no CE columns

    # Never a face: detection 0, every statistic null, a note says so.
    assert p1["detection_rate"] == 0.0 and p1["frames_with_face"] == 0
    for key in (
        "expression_share",
        "expression_top",
        "valence_mean",
        "valence_sd",
        "arousal_mean",
        "au_rate",
    ):
        assert p1[key] is None, key
    assert any("Person 1" in note for note in summary["notes"])

    overall = summary["overall"]
    assert overall["detection_rate"] == pytest.approx(0.75)  # frames 0, 1, 3 have a face
    assert overall["expression_share"]["happiness"] == pytest.approx(2 / 3)
    assert overall["mimicry"] is None


def test_summary_is_json_and_keys_do_not_depend_on_the_tasks():
    import json

    full = summarise(two_people())
    json.dumps(full, allow_nan=False)  # plain floats, no NaN
    va_only = two_people().select([c for c in two_people().columns if c in table_schema(get_tasks(["va"]))])
    small = summarise(va_only)
    assert set(small) == set(full)
    assert set(small["persons"][0]) == set(full["persons"][0])
    assert small["tasks"] == ["va"]
    assert small["persons"][0]["expression_share"] is None and small["persons"][0]["au_rate"] is None
    assert small["persons"][0]["valence_mean"] == pytest.approx(0.1)
    assert any("no expr, au outputs" in note for note in small["notes"])


def test_summary_compound_share_and_nobody():
    compounds = ["Happily_Surprised", "Happily_Surprised", "Sadly_Angry", "Happily_Surprised", None]
    table = build(
        ["ce"],
        {
            "video": ["c"] * 5,
            "frame": list(range(5)),
            "face_id": [3] * 5,
            "face_found": [True, True, True, True, False],
            "face_filled": [False] * 5,
            "face_rejected": [False] * 5,
            "compound": compounds,
        },
    )
    person = summarise(table)["persons"][0]
    assert person["compound_dominant"] == "happily_surprised"
    assert person["compound_dominant_share"] == pytest.approx(0.75)
    assert person["compound_share"]["sadly_angry"] == pytest.approx(0.25)

    empty = summarise(nobody())
    assert empty["people"] == 0 and empty["persons"] == [] and empty["frames"] == 4
    assert empty["overall"]["detection_rate"] == 0.0
    assert empty["overall"]["expression_share"] is None and empty["overall"]["valence_mean"] is None


# --- annotated video --------------------------------------------------------------------------------------


def write_video(path, n: int = 20, size: tuple[int, int] = (160, 120)) -> None:
    """A flat grey mp4v clip, so anything drawn on it stands out."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    assert writer.isOpened()
    for _ in range(n):
        writer.write(np.full((size[1], size[0], 3), 128, np.uint8))
    writer.release()


def read_video(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def one_person(n: int, tasks: list[str], box: tuple[float, float, float, float] = (20, 40, 50, 50)):
    """One person found on every frame but 5..7, always at `box` (x, y, w, h)."""
    found = [not 5 <= f <= 7 for f in range(n)]
    columns = {
        "video": ["clip"] * n,
        "frame": list(range(n)),
        "face_id": [0] * n,
        "face_found": found,
        "face_filled": [False] * n,
        "face_rejected": [False] * n,
        "face_reason": [None if f else "no_face" for f in found],
        **{
            c: [v if f else None for f in found]
            for c, v in zip(("FaceRectX", "FaceRectY"), box[:2], strict=True)
        },
        **{
            c: [v if f else None for f in found]
            for c, v in zip(("FaceRectWidth", "FaceRectHeight"), box[2:], strict=True)
        },
    }
    if "expr" in tasks:
        columns |= expression_probabilities(["Happiness"] * n) | {"expression": ["Happiness"] * n}
    if "va" in tasks:
        columns |= {"valence": [0.5] * n, "arousal": [-0.5] * n}
    return build(tasks, columns)


def test_annotated_video_has_one_frame_per_timeline_frame_and_draws_the_box(tmp_path):
    source, out = tmp_path / "clip.mp4", tmp_path / "out" / "clip_annotated.mp4"
    write_video(source)
    written = write_annotated_video(source, one_person(20, ["expr", "va"]), out, progress=False)
    frames = read_video(out)
    assert written == 20 and len(frames) == 20
    assert frames[0].shape == (120, 160, 3)

    diff = np.abs(frames[10].astype(int) - 128).max(axis=2)  # [H, W] change from the flat source
    left_edge = diff[45:85, 19:22]  # the box's left side (x = 20), below its label
    assert np.median(left_edge.max(axis=1)) > 60
    inside = diff[55:80, 30:60]  # inside the box: nothing drawn
    assert np.median(inside) < 12
    corner = diff[100:118, 125:158]  # far from the box, the label, the gauge and the header
    assert np.median(corner) < 12
    # Frame 6 has no face: no box, and the "no face" note (left, under the header) instead.
    no_face = np.abs(frames[6].astype(int) - 128).max(axis=2)
    assert np.median(no_face[45:85, 19:22].max(axis=1)) < 20
    assert no_face[22:32, 0:40].mean() > 30  # rows 3..18 hold the header, 19..34 the note


def test_annotated_video_fills_undecoded_frames_and_needs_no_task_columns(tmp_path):
    source, out = tmp_path / "clip.mp4", tmp_path / "annotated.mp4"
    write_video(source, n=12)
    table = one_person(15, [])  # the table knows 15 frames, the file decodes 12; no task columns at all
    assert write_annotated_video(source, table, out, progress=False) == 15
    frames = read_video(out)
    assert len(frames) == 15
    last = frames[-1].astype(int)
    assert abs(np.median(last) - 90) < 8  # the grey "did not decode" frame ...
    assert (last > 200).mean() > 0.005  # ... with its light text
    assert write_annotated_video(source, nobody(12), tmp_path / "nobody.mp4", progress=False) == 12
    first = np.abs(read_video(tmp_path / "nobody.mp4")[0].astype(int) - 128).max(axis=2)
    assert first[22:32, 0:40].mean() > 30  # the "no face" note under the header (rows 3..18)
    assert np.median(first[40:, :]) < 12  # and nothing else


def test_annotated_video_names_the_path_it_cannot_write(tmp_path):
    source = tmp_path / "clip.mp4"
    write_video(source, n=3)
    blocked = tmp_path / "blocked.mp4"
    blocked.mkdir()  # a folder where the file should go
    with pytest.raises(OSError, match="blocked.mp4"):
        write_annotated_video(source, one_person(3, ["va"]), blocked, progress=False)


# --- HTML report ------------------------------------------------------------------------------------------


def images(page: str) -> list[np.ndarray]:
    """The page's inline PNGs, decoded."""
    return [
        cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for external in ('src="http', "src='http", "<script", "<link", "url(", "@import"):
        assert external not in page, external


def test_report_is_one_self_contained_file_with_the_headline_numbers(tmp_path):
    table = two_people()
    summary = summarise(table)
    summary["notes"] = [*summary["notes"], "audio: no audio stream"]
    summary["bundle"] = {
        "name": "bundle-x",
        "versions": {"affectflow": "0.3.0"},
        "metrics": {"expr": {"metric": "f1", "score": 0.4123}},
    }
    faces = [(0, 0, np.full((112, 112, 3), 200, np.uint8)), (0, 3, np.full((60, 40, 3), 90, np.uint8))]
    out = tmp_path / "report" / "clip.html"
    write_report(table, summary, out, faces=faces)
    assert [p.name for p in out.parent.iterdir()] == ["clip.html"]
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<title>clip</title>" in page
    assert "Person 0" in page and "Person 1" in page
    assert ">75%<" in page and ">0%<" in page  # per-person detection rates
    for name in ("Happiness", "Sadness"):  # the expressions present
        assert name in page
    assert "No usable face of this person" in page  # person 1: no timelines
    assert "audio: no audio stream" in page and "Person 1: no usable face" in page
    assert "bundle-x" in page and "0.412" in page
    assert "Mimicry" in page
    pngs = images(page)
    # The expression-share chart, person 0's timelines, two thumbnails (person 1 has no figure).
    assert len(pngs) == 4 and all(p is not None for p in pngs)
    thumbnails = pngs[2:]
    assert max(thumbnails[0].shape[:2]) == 96 and thumbnails[1].shape[:2] == (60, 40)  # never enlarged
    assert "frame 3" in page and "1.5 s" in page  # the contact sheet's caption (frame 3 at 2 fps)


def test_report_without_anybody(tmp_path):
    table = nobody()
    out = tmp_path / "empty.html"
    write_report(table, summarise(table), out, title="Nobody here")
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<h1>Nobody here</h1>" in page and "No usable face was found in this video" in page
    assert "0 people" in page
    assert "<img" not in page


@pytest.mark.parametrize("tasks", [["expr", "au", "va", "ce"], ["va"], []])
def test_report_single_frame_and_missing_tasks(tmp_path, tasks):
    columns = {
        "video": ["one"],
        "frame": [0],
        "face_id": [2],
        "face_found": [True],
        "face_filled": [False],
        "face_rejected": [False],
    }
    if "expr" in tasks:
        columns |= expression_probabilities(["Surprise"]) | {"expression": ["Surprise"]}
    if "au" in tasks:
        columns |= {"AU12": [0.9], "AU12_c": [1]}
    if "va" in tasks:
        columns |= {"valence": [0.3], "arousal": [0.6]}
    if "ce" in tasks:
        columns |= {"compound_happily_surprised": [0.8], "compound": ["Happily_Surprised"]}
    table = build(tasks, columns)
    out = tmp_path / "one.html"
    write_report(table, summarise(table), out)
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "Person 2" in page and ">100%<" in page
    # The person's timelines, plus the expression-share chart with EXPR; no figure without outputs.
    assert len(images(page)) == (2 if "expr" in tasks else 1 if tasks else 0)
    assert ("Surprise" in page) == ("expr" in tasks)
    if not tasks:
        assert "no outputs to plot" in page
