"""The face table builder (status, fill_from, nulls) and the streamed crop files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.faces.storage import CropWriter, read_rows
from pipeline.faces.table import COLUMNS, FaceRow, FaceTableBuilder, check_table, nearest_usable, points_array


def _face(frame: int, **kwargs) -> FaceRow:
    return FaceRow(frame, None, person=0, origin="detected", score=0.9, box=(1, 2, 3, 4), **kwargs)


def test_nearest_usable_matches_a_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        usable = rng.random(rng.integers(1, 30)) < 0.3
        expected = []
        for frame in range(len(usable)):
            valid = np.flatnonzero(usable)
            if not len(valid):
                expected.append(-1)
                continue
            distance = np.abs(valid - frame)
            expected.append(int(valid[np.argmin(distance)]))  # argmin takes the first: the earlier on ties
        np.testing.assert_array_equal(nearest_usable(usable), expected)


def test_status_reason_and_fill_from() -> None:
    builder = FaceTableBuilder()
    builder.add(FaceRow(0, "undecoded"))
    builder.add(_face(1, landmarks68=np.ones((68, 2)), pose=(1.0, 2.0, 3.0), sharpness=40.0))
    builder.add(FaceRow(2, "blurred", person=0, origin="tracked", box=(1, 2, 3, 4)))
    builder.add(FaceRow(3, "no_face"))
    builder.add(FaceRow(4, "no_face"))
    builder.add(_face(5))
    table = builder.finish()
    check_table(table, "test")
    assert table.columns == list(COLUMNS)
    assert table["status"].to_list() == ["filled", "face", "filled", "filled", "filled", "face"]
    assert table["fill_from"].to_list() == [1, 1, 1, 1, 5, 5]  # frame 3 is 2 from 1 and 5: the earlier
    assert table["reason"].to_list() == ["undecoded", None, "blurred", "no_face", "no_face", None]
    # a rejected face keeps what was measured; nothing is NaN, missing values are null
    assert table["x1"].to_list() == [None, 1.0, 1.0, None, None, 1.0]
    assert table["landmarks"][1].to_list() == [1.0] * 136
    assert table["landmarks"][0] is None and table["yaw"][0] is None
    assert not any(table.select(pl.col(pl.Float32).is_nan().any()).row(0))


def test_a_track_without_any_usable_face_is_none_everywhere() -> None:
    builder = FaceTableBuilder()
    for frame in range(3):
        builder.add(FaceRow(frame, "small", person=2, origin="detected", box=(0, 0, 5, 5)))
    table = builder.finish()
    assert table["status"].to_list() == ["none"] * 3
    assert table["fill_from"].null_count() == 3


def test_rows_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown reason"):
        FaceRow(0, "sleepy")
    with pytest.raises(ValueError, match="needs a box"):
        FaceRow(0, None)
    builder = FaceTableBuilder()
    builder.add(FaceRow(3))
    with pytest.raises(ValueError, match="frames must increase"):
        builder.add(FaceRow(3))
    with pytest.raises(ValueError, match="lacks column"):
        check_table(pl.DataFrame({"frame": [0]}), "t.parquet")
    with pytest.raises(ValueError, match="0, 1, 2"):
        check_table(builder.finish(), "t.parquet")  # starts at frame 3


def test_crop_writer_streams_a_valid_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    writer = CropWriter(16, tmp_path / "face.npy")
    for crop in crops:
        writer.append(crop)
    assert not (tmp_path / "face.npy").exists()  # only the .part file until finished
    loaded = writer.finish()
    np.testing.assert_array_equal(loaded, crops)
    np.testing.assert_array_equal(np.load(tmp_path / "face.npy"), crops)  # a plain np.load works too
    assert not list(tmp_path.glob("*.part"))
    empty = CropWriter(16, tmp_path / "empty.npy").finish()
    assert empty.shape == (0, 16, 16, 3)
    with pytest.raises(ValueError, match="uint8 crop"):
        CropWriter(16, None).append(np.zeros((8, 8, 3), np.uint8))
    in_memory = CropWriter(16, None)
    in_memory.append(crops[0])
    np.testing.assert_array_equal(in_memory.finish(), crops[:1])


def test_read_rows_reads_batches_of_a_mapped_file_without_mapping_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    writer = CropWriter(8, tmp_path / "face.npy")
    for crop in crops:
        writer.append(crop)
    mapped = writer.finish()
    assert isinstance(mapped, np.memmap)
    for start, stop in [(0, 4), (4, 8), (8, 12), (3, 3), (12, 20)]:
        rows = read_rows(mapped, start, stop)
        np.testing.assert_array_equal(rows, crops[start:stop])
        assert not isinstance(rows, np.memmap) and rows.flags.writeable
    np.testing.assert_array_equal(read_rows(crops, 2, 5), crops[2:5])  # in memory: a copy
    np.testing.assert_array_equal(read_rows(mapped[2:], 1, 3), crops[3:5])  # a slice of the map
    with open(tmp_path / "face.npy", "r+b") as file:  # cut the file behind the map's back
        file.truncate(128 + 5 * 8 * 8 * 3)
    with pytest.raises(OSError, match=r"face.npy: rows 4..8 lie past the end"):
        read_rows(mapped, 4, 8)


def test_points_array_keeps_rows_in_place_and_marks_incomplete_ones():
    """Null and wrong-length rows come out as NaN rows marked incomplete; the rest in order, as float32."""
    column = pl.Series(
        "landmarks", [[1.0, 2.0, 3.0, 4.0], None, [5.0, 6.0], [7.5, 8.0, 9.0, 10.0]], pl.List(pl.Float32)
    )
    complete, values = points_array(column, 4)
    assert complete.tolist() == [True, False, False, True]
    assert values.dtype == np.float32 and values.shape == (4, 4)
    np.testing.assert_array_equal(values[[0, 3]], [[1, 2, 3, 4], [7.5, 8, 9, 10]])
    assert np.isnan(values[[1, 2]]).all()
    complete, values = points_array(pl.Series("landmarks", [], pl.List(pl.Float32)), 4)
    assert complete.shape == (0,) and values.shape == (0, 4)
