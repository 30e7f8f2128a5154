"""Aff-Wild2's `cropped_aligned` images as a face source: the organisers' crops in the faces stage's format.

Input (`/work/shared/docs/FORMATS.md`, Aff-Wild2): `cropped_aligned/<track>/<k:05d>.jpg`, 112×112 aligned
faces; image k is frame k, 1-based, i.e. our 0-based timeline frame k - 1. Frames in which the organisers
found no face simply have no image.

Output: the same files as the faces stage (`pipeline.faces.process`), so later stages cannot tell the source
apart except by the `origin` column:
- `table.parquet`: one row per timeline frame (schema: `pipeline.faces.table`). A frame with an image that
  decodes is a usable face (`origin="organisers"`); a frame without one has `reason="no_image"`; an image
  that does not decode or has the wrong size has `reason="corrupt"` (with `origin="organisers"`, which tells
  it apart from a detected face that the quality checks call corrupt).
- `<view>.npy`: uint8 [M, S, S, 3] RGB, one crop per usable row in frame order (`pipeline.faces.storage`).

What the table holds for this origin, and why:
- `x1, y1, x2, y2` = (0, 0, W, H): the whole organisers' image, in THAT IMAGE'S pixels, not frame pixels.
  No frame was looked at, so no frame box exists; the table's builder needs a box for a usable face, and
  the whole image is the only box that is true. Code that maps boxes to frames must check `origin`.
- `landmarks5` is null, as are `landmarks`, the pose and `score`: nothing was measured. The five points are
  by construction wherever the organisers' template put them (`pipeline.faces.align.template(W, margin)`
  when `margin` is right); writing that constant into every row would look like a measurement (and show a
  perfectly still face to anything that reads landmark jitter). `sharpness` is left to
  `pipeline.faces.quality`; `person` is null (no tracker ran).

The margin. Views are fractions of the ArcFace square inside a crop (`pipeline.faces.align`), so reading a
crop needs the border its aligner left around that square. Our own crops use `DEFAULT_MARGIN` (0.15). The
default here, `ORGANISERS_MARGIN` = 0.0, assumes the organisers warped each face onto InsightFace's ArcFace
112×112 template with no extra border (the usual RetinaFace + 5-point similarity recipe; the crops are
described as tight: brows near the top, chin often cut). It is an assumption, not a measurement: Aff-Wild2
cannot be downloaded here. `measure_margin` measures it on a real `cropped_aligned/<track>/` folder
(dlib's points on the crops fitted to the template); on crops this repo aligned at margin 0.0 and 0.15 it
reads about 0.01 and 0.16 (tests). Run it once on the real data and set `margin` from it. Note that the
`face` view of an organisers' crop (margin 0.0) is framed tighter than our own (0.15): do not mix the two
sources in one model without noticing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl
from tqdm import tqdm

from pipeline.faces.align import ARCFACE_TEMPLATE_112, VIEWS, make_views, similarity_transform
from pipeline.faces.storage import CropWriter
from pipeline.faces.table import TABLE_FILE, FaceRow, FaceTableBuilder, check_table
from pipeline.resume import commit, file_digest, fresh_staging, unit_key

ORGANISERS_SIZE = 112  # side of the organisers' images
ORGANISERS_MARGIN = 0.0  # assumed border around the ArcFace square (module docstring)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NUMBERED = re.compile(r"[0-9]+")
# Files that desktops and archivers leave in folders ("._00001.jpg" from macOS zips, ".DS_Store",
# "Thumbs.db"): they hold no frame, so they are skipped with a note instead of failing the track.
SYSTEM_FILES = ("thumbs.db", "desktop.ini")


@dataclass
class OrganisersConfig:
    """Knobs for reading the organisers' crops (they change results, so they belong in params.yaml)."""

    crop_size: int = 112  # side of the stored crops and views (INTER_AREA to shrink, INTER_LINEAR to enlarge)
    views: tuple[str, ...] = ("face", "eye_mouth")  # keys of pipeline.faces.align.VIEWS
    margin: float = ORGANISERS_MARGIN  # border of the organisers' alignment around the ArcFace square
    image_size: int = ORGANISERS_SIZE  # side every organisers' image must have; others are "corrupt"

    def __post_init__(self) -> None:
        # params.yaml gives lists; keep a tuple so configs compare and hash predictably.
        self.views = tuple(self.views)
        unknown = [name for name in self.views if name not in VIEWS]
        if unknown:
            raise KeyError(f"unknown view(s) {unknown} (registered: {', '.join(VIEWS)})")
        if self.crop_size < 1 or self.image_size < 1:
            raise ValueError(
                f"crop_size and image_size must be >= 1, got {self.crop_size}, {self.image_size}"
            )
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 (a fraction of the ArcFace square), got {self.margin}")


def list_crop_images(track_dir: Path) -> dict[int, Path]:
    """The organisers' images of one track, by 0-based frame.

    Names must be `<digits>.jpg` (also `.jpeg`, `.png`, any case), numbered from 1: image k is frame k - 1.
    Hidden files and desktop litter (`SYSTEM_FILES`) are skipped with a printed note. Anything else is an
    error: a stray file in an organisers' folder means a wrong path or a mangled extraction, and skipping it
    could silently drop a frame's face.

    Returns:
        {frame (0-based): path}, in frame order.
    """
    track_dir = Path(track_dir)
    if not track_dir.is_dir():
        raise FileNotFoundError(f"{track_dir}: no such folder (expected cropped_aligned/<track>/ of images)")
    images: dict[int, Path] = {}
    skipped: list[str] = []
    unexpected: list[str] = []
    for path in sorted(track_dir.iterdir()):
        name = path.name
        if name.startswith(".") or name.lower() in SYSTEM_FILES:
            skipped.append(name)
            continue
        if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and NUMBERED.fullmatch(path.stem)):
            unexpected.append(name)
            continue
        number = int(path.stem)
        if number == 0:
            raise ValueError(
                f"{path}: images are numbered from 1 (image k is frame k, 1-based), found {name}"
            )
        if number - 1 in images:
            raise ValueError(
                f"{track_dir}: two images for frame {number}: {images[number - 1].name} and {name}"
            )
        images[number - 1] = path
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise ValueError(
            f"{track_dir}: {len(unexpected)} entry(ies) not an image named <digits>.jpg|.png "
            f"(expected only the organisers' numbered crops): {shown}"
        )
    if skipped:
        print(f"{track_dir}: note: skipped {len(skipped)} hidden/system file(s): {', '.join(skipped[:5])}")
    return dict(sorted(images.items()))


def organisers_frame_count(track_dir: Path, label_rows: int | None) -> int:
    """The frame count of a track whose raw video is absent: max(label rows, last image number).

    The timeline's length is the video's decoded frame count, which only the video can give. Without it:
    an annotation file has one line per frame of the whole video, so its row count is the best estimate;
    images exist only for frames with a face, so the last image number is a lower bound that the count must
    reach (else `read_cropped_aligned` would reject those images). The max gives every label row and every
    image a table row; frames after the last image become `no_image` rows filled from the last face.

    Args:
        track_dir: `cropped_aligned/<track>/`.
        label_rows: data lines of the track's annotation file (header excluded), or None without one.
    """
    if label_rows is not None and label_rows < 0:
        raise ValueError(f"{track_dir}: label_rows must be >= 0, got {label_rows}")
    images = list_crop_images(track_dir)
    last_image = max(images) + 1 if images else 0  # 1-based number of the last image
    if label_rows is None and not images:
        raise ValueError(f"{track_dir}: no images and no label file, so the frame count is unknown")
    return max(label_rows or 0, last_image)


def decode_crop(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    """Read one organisers' image.

    Returns:
        (bgr [size, size, 3] uint8, "") or (None, why it is unusable).
    """
    data = np.fromfile(path, dtype=np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        # Some OpenCV builds decode a truncated JPEG (missing rows padded with grey): demand the end marker.
        tail = data[-16:].tobytes().rstrip(b"\x00")
        if data[:2].tobytes() != b"\xff\xd8" or not tail.endswith(b"\xff\xd9"):
            return None, "not a complete JPEG (start or end marker missing)"
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        return None, "does not decode"
    if bgr.shape[:2] != (size, size):
        return None, f"is {bgr.shape[1]}×{bgr.shape[0]}, expected {size}×{size}"
    return bgr, ""


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] -> [size, size, 3]: area filter to shrink (no aliasing), bilinear to enlarge."""
    if rgb.shape[:2] == (size, size):
        return rgb
    interpolation = cv2.INTER_AREA if size < rgb.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def _drop_beyond(track_dir: Path, images: dict[int, Path], n_frames: int) -> dict[int, Path]:
    """Images past the timeline: exactly one, right after the last frame, is ignored; more is an error."""
    beyond = [frame for frame in images if frame >= n_frames]
    if not beyond:
        return images
    if beyond == [n_frames]:
        # Aff-Wild2's annotation frame count (and so its image numbers) can exceed the decoded count by one.
        print(
            f"{track_dir}: note: ignoring {images[n_frames].name}, one image past the {n_frames} frames "
            "(Aff-Wild2's frame numbering can run one past the decoded video)"
        )
        return {frame: path for frame, path in images.items() if frame < n_frames}
    last = images[max(beyond)]
    raise ValueError(
        f"track {track_dir.name}: {len(beyond)} image(s) beyond its {n_frames} frames, the last {last} "
        f"(frame {max(beyond) + 1}, 1-based); is n_frames the decoded frame count of this track's video?"
    )


def read_cropped_aligned(
    track_dir: Path, n_frames: int, config: OrganisersConfig, out_dir: Path | None
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Read one track's organisers' crops into a face table and view crops.

    Args:
        track_dir: `cropped_aligned/<track>/`.
        n_frames: frames on the track's timeline (decoded frames of the video, or `organisers_frame_count`).
        config: see `OrganisersConfig`.
        out_dir: when given, crops are streamed to `<out_dir>/<view>.npy` and the table written last to
            `<out_dir>/table.parquet` (so a table means a complete folder; a resumable stage should still
            pass a staging folder, `pipeline.resume`); when None, everything stays in memory.

    Returns:
        (table with n_frames rows, schema `pipeline.faces.table`; {view: uint8 [M, S, S, 3]} RGB for the M
        usable rows in frame order, memory-mapped when written to out_dir).
    """
    track_dir = Path(track_dir)
    if n_frames < 0:
        raise ValueError(f"{track_dir}: n_frames must be >= 0, got {n_frames}")
    images = _drop_beyond(track_dir, list_crop_images(track_dir), n_frames)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    writers = {
        view: CropWriter(config.crop_size, out_dir / f"{view}.npy" if out_dir is not None else None)
        for view in config.views
    }
    builder = FaceTableBuilder()
    side = float(config.image_size)
    box = (0.0, 0.0, side, side)  # the whole organisers' image, in its own pixels (module docstring)
    progress = tqdm(range(n_frames), desc=f"organisers {track_dir.name}", unit="frame", disable=None)
    try:
        for frame in progress:
            path = images.get(frame)
            if path is None:
                builder.add(FaceRow(frame, reason="no_image"))
                continue
            bgr, why = decode_crop(path, config.image_size)
            if bgr is None:
                print(f"{path}: {why}; frame {frame} marked corrupt")
                builder.add(FaceRow(frame, reason="corrupt", origin="organisers"))
                continue
            rgb = resize_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), config.crop_size)
            for view, crop in make_views(rgb, config.views, margin=config.margin).items():
                writers[view].append(crop)
            builder.add(FaceRow(frame, reason=None, origin="organisers", box=box))
        table = builder.finish()
        check_table(table, str(track_dir))
        crops = {view: writer.finish() for view, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        progress.close()
    if out_dir is not None:
        part = out_dir / (TABLE_FILE + ".part")
        table.write_parquet(part)
        os.replace(part, out_dir / TABLE_FILE)
    return table, crops


def measure_margin(track_dir: Path, max_images: int = 50) -> float:
    """Measure the border an aligner left around the ArcFace square, from a folder of its crops.

    Each sampled crop is enlarged 2× and padded (dlib's HOG detector needs context around a tight face and
    faces of about 80 px or more), dlib's 68 points give the 5 alignment points, and a similarity fit of the
    ArcFace 112 template onto them gives the square's side `a·112` in crop pixels; the margin is then
    (S / (a·112) - 1) / 2 for crops of side S. dlib's eye centres and mouth corners differ a little from
    RetinaFace's, so expect about ±0.02.

    Args:
        track_dir: `cropped_aligned/<track>/` (or any folder `list_crop_images` accepts).
        max_images: images sampled evenly over the track.

    Returns:
        The median margin over the crops in which a face was found.
    """
    from pipeline.faces.detectors import create_detector
    from pipeline.faces.landmarks import LandmarkPredictor, five_points

    paths = list(list_crop_images(track_dir).values())
    if not paths:
        raise ValueError(f"{track_dir}: no images to measure the margin on")
    paths = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, max_images).round().astype(int))]
    detector, predictor = create_detector("dlib_hog"), LandmarkPredictor()
    margins = []
    for path in paths:
        bgr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[0] != bgr.shape[1]:
            continue
        side = bgr.shape[0]
        big = cv2.resize(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (2 * side, 2 * side), interpolation=cv2.INTER_LINEAR
        )
        padded = cv2.copyMakeBorder(big, side, side, side, side, cv2.BORDER_CONSTANT, value=0)
        detections = detector(padded)
        if not detections:
            continue
        points = five_points(predictor(padded, detections[0].box))
        points = (points - side + 0.5) / 2 - 0.5  # back to crop pixels (resize maps pixel centres)
        M = similarity_transform(ARCFACE_TEMPLATE_112, points)
        scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
        margins.append((side / (112.0 * scale) - 1) / 2)
    if not margins:
        raise ValueError(f"{track_dir}: dlib found no face in {len(paths)} sampled images")
    print(f"{track_dir}: margin measured on {len(margins)} of {len(paths)} sampled images")
    return float(np.median(margins))


def images_digest(track_dir: Path) -> str:
    """sha256 over every crop image's name and content: the resume key's view of a track's crops."""
    images = list_crop_images(track_dir) if Path(track_dir).is_dir() else {}
    return unit_key({str(frame): [path.name, file_digest(path)] for frame, path in sorted(images.items())})


def process_organisers_track(
    track_dir: Path, track: str, n_frames: int, config: OrganisersConfig, out_root: Path, key: str | None
) -> Path:
    """The faces stage's job for one track read from `cropped_aligned/` (same outputs as for a video).

    A track without a `cropped_aligned/<track>/` folder gets a table with no face on any frame
    (`reason = "no_image"`), like a video where no face is found. Written into a staging folder and renamed
    into place when complete (`pipeline.resume`).

    Returns:
        The track's output folder.
    """
    final = Path(out_root) / track
    staging = fresh_staging(final)
    if Path(track_dir).is_dir():
        read_cropped_aligned(track_dir, n_frames, config, staging)
    else:
        print(f"{track_dir}: no such folder: track {track} gets no face on any of its {n_frames} frames")
        builder = FaceTableBuilder()
        for frame in range(n_frames):
            builder.add(FaceRow(frame, reason="no_image"))
        for view in config.views:
            CropWriter(config.crop_size, staging / f"{view}.npy").finish()
        builder.finish().write_parquet(staging / TABLE_FILE)
    commit(staging, final, key)
    return final
