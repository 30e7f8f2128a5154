"""Crop (and feature) arrays on disk: one `.npy` per track and view, written as a stream, read memory-mapped
or in batches.

A `.npy` header holds the array's shape, unknown until a video ends. `CropWriter` reserves a fixed-size
header, appends crops behind it as they come and rewrites the header in place when done: nothing is
copied or mapped at the end, so memory stays flat however long the video is (the previous writer copied a
raw file behind a header at the end, mapping it whole: about 75 MB more peak memory per 1,000 frames).
The files are plain `.npy` (format 1.0): `np.load(path, mmap_mode="r")` reads them lazily.

A memory map's pages stay resident (and count as the process's memory) until it is unmapped, so a pass
over all crops of a long video through the map grows memory by the whole file. `read_rows` reads a batch
of rows of a mapped file with plain file reads instead, so such a pass holds one batch at a time.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"\x93NUMPY\x01\x00"
# Magic (8) + header length (2) + header text: 128 bytes hold a 4-D shape with counts up to 10^15.
HEADER_BYTES = 128


def _header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    text = (
        f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    )
    room = HEADER_BYTES - len(MAGIC) - 2
    if len(text) + 1 > room:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return MAGIC + struct.pack("<H", room) + (text.ljust(room - 1) + "\n").encode("latin1")


class RowWriter:
    """Streams rows of one shape and dtype into `<path>` (a `.npy` [M, *row_shape]), or keeps them in
    memory when `path` is None.

    The file is written as `<path>.part` and renamed to `<path>` by `finish`, so a killed job never leaves a
    file that looks complete.
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype | type, path: Path | None) -> None:
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.path = path
        self.count = 0
        self._chunks: list[np.ndarray] = []
        self._file = None
        if path is not None:
            self._part = path.with_name(path.name + ".part")
            self._file = self._part.open("wb")
            self._file.write(_header((0, *self.row_shape), self.dtype))

    def append(self, row: np.ndarray) -> None:
        """row: [*row_shape] of the writer's dtype."""
        self.extend(row[None])

    def extend(self, rows: np.ndarray) -> None:
        """rows: [n, *row_shape] of the writer's dtype."""
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(f"expected {self._what()}, got {rows.dtype} {rows.shape[1:]}")
        if self._file is not None:
            self._file.write(np.ascontiguousarray(rows).tobytes())
        else:
            self._chunks.append(np.array(rows))
        self.count += len(rows)

    def _what(self) -> str:
        return f"rows of {self.dtype} {list(self.row_shape)}"

    def finish(self) -> np.ndarray:
        """Return [M, *row_shape]: in memory, or the finished file opened lazily (mmap)."""
        shape = (self.count, *self.row_shape)
        if self._file is None:
            return np.concatenate(self._chunks) if self._chunks else np.zeros(shape, dtype=self.dtype)
        self._file.seek(0)
        self._file.write(_header(shape, self.dtype))
        self._file.close()
        assert self.path is not None
        os.replace(self._part, self.path)
        return np.load(self.path, mmap_mode="r")

    def abort(self) -> None:
        """Close and delete a partly written file."""
        if self._file is not None and not self._file.closed:
            self._file.close()
            self._part.unlink(missing_ok=True)


class CropWriter(RowWriter):
    """Streams uint8 crops [S, S, 3] into `<path>` (a `.npy`), or keeps them in memory when `path` is None."""

    def __init__(self, side: int, path: Path | None) -> None:
        super().__init__((side, side, 3), np.uint8, path)
        self.side = side

    def _what(self) -> str:
        return f"a uint8 crop [{self.side}, {self.side}, 3]"


def read_rows(crops: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an array [M, ...] (crops [M, S, S, 3], features [M, D]) as a new in-memory array.

    A file opened by `np.load(path, mmap_mode="r")` is read with a plain file read (its mapped pages are
    not touched, so they do not pile up in memory); any other array, or a slice of a mapped one, is copied.
    """
    stop = min(stop, len(crops))
    start = min(start, stop)
    if not (isinstance(crops, np.memmap) and isinstance(crops.base, mmap.mmap) and crops.filename):
        return np.array(crops[start:stop])
    row_items = int(np.prod(crops.shape[1:], dtype=np.int64))
    with open(crops.filename, "rb") as file:
        rows = np.fromfile(
            file,
            dtype=crops.dtype,
            count=(stop - start) * row_items,
            offset=crops.offset + start * row_items * crops.dtype.itemsize,
        )
    if len(rows) != (stop - start) * row_items:
        raise OSError(f"{crops.filename}: rows {start}..{stop} lie past the end of the file (truncated?)")
    return rows.reshape((stop - start, *crops.shape[1:]))
