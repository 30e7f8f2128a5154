"""Per-video scene randomness: backgrounds, head motion, lighting, blur and no-face stretches.

Everything here is a plain time series drawn from the video's generator, so the frame loop stays a
simple function of (frame index, these arrays).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

PAN_MARGIN = 24  # background is this much larger than the frame on each side, for camera drift


@functools.cache
def _texture_sources() -> tuple[np.ndarray, ...]:
    """Grey textures shipped with scikit-image, [H, W] float32 in [0, 1]."""
    from skimage import data

    return tuple(np.asarray(f(), np.float32) / 255.0 for f in (data.brick, data.grass, data.gravel))


@functools.cache
def _photo_sources() -> tuple[np.ndarray, ...]:
    """Face-free colour photos shipped with scikit-image, [H, W, 3] uint8 RGB (used out of focus)."""
    from skimage import data

    return tuple(
        np.ascontiguousarray(f()[..., :3])
        for f in (data.coffee, data.rocket, data.hubble_deep_field, lambda: data.stereo_motorcycle()[0])
    )


def _random_colour(rng: np.random.Generator, lo: float = 30, hi: float = 230) -> np.ndarray:
    return rng.uniform(lo, hi, 3).astype(np.float32)


def make_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """[height, width, 3] float32 RGB background: a tinted texture, a blurred photo, a gradient or clouds."""
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # tinted texture (wall, grass, gravel), slightly out of focus
        tex = _texture_sources()[int(rng.integers(3))]
        scale = float(rng.uniform(0.6, 1.4))
        tex = cv2.resize(tex, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        tex = np.tile(tex, (height // tex.shape[0] + 1, width // tex.shape[1] + 1))[:height, :width]
        tex = cv2.GaussianBlur(tex, (0, 0), float(rng.uniform(0.5, 2.0)))
        c0, c1 = _random_colour(rng, 10, 120), _random_colour(rng, 120, 245)
        bg = c0 + tex[..., None] * (c1 - c0)
    elif kind == 1:  # a real photo, far out of focus (a room behind the speaker)
        photo = _photo_sources()[int(rng.integers(len(_photo_sources())))]
        y0 = int(rng.integers(0, max(1, photo.shape[0] - height // 2)))
        x0 = int(rng.integers(0, max(1, photo.shape[1] - width // 2)))
        crop = photo[y0:, x0:]
        bg = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
        bg = cv2.GaussianBlur(bg, (0, 0), float(rng.uniform(3.0, 7.0)))
    elif kind == 2:  # two-colour linear gradient with a vignette
        angle = rng.uniform(0, np.pi)
        u = (xx * np.cos(angle) + yy * np.sin(angle)) / (
            abs(np.cos(angle)) * width + abs(np.sin(angle)) * height
        )
        u = (u - u.min()) / (u.max() - u.min() + 1e-6)
        bg = _random_colour(rng) + u[..., None] * (_random_colour(rng) - _random_colour(rng))
        r2 = ((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2
        bg *= (1 - 0.6 * r2)[..., None]
    else:  # smooth colour clouds
        small = rng.uniform(0, 1, (int(rng.integers(3, 8)), int(rng.integers(4, 10)), 3)).astype(np.float32)
        clouds = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        bg = _random_colour(rng, 20, 120) + clouds * _random_colour(rng, 60, 160)
    grain = rng.normal(0, float(rng.uniform(1, 4)), (height, width, 1)).astype(np.float32)
    return np.clip(bg + grain, 0, 255).astype(np.float32)


def smooth_walk(
    n: int, sigma_frames: float, scale: float, rng: np.random.Generator, dims: int = 1
) -> np.ndarray:
    """[n, dims] smooth zero-mean random path with standard deviation about `scale`."""
    x = gaussian_filter1d(rng.normal(0, 1, (n + 4 * int(sigma_frames), dims)), sigma_frames, axis=0)
    x = x[2 * int(sigma_frames) : 2 * int(sigma_frames) + n]
    return x / max(float(x.std()), 1e-6) * scale


@dataclass
class Camera:
    """Per-frame scene settings of one video.

    Attributes:
        background: [H + 2m, W + 2m, 3] float32 RGB backdrop (m = PAN_MARGIN).
        cut_background: same shape, the shot the video cuts to (no person in it).
        pan: [T, 2] int backdrop offset (x, y) in [0, 2m].
        gain: [T, 3] float32 per-channel light gain (brightness and colour temperature).
        side_light: [T] float32 left-right light gradient strength.
        blur: [T] float32 Gaussian blur sigma (0 = sharp).
        noise: [K, H, W, 3] float32 sensor-noise bank; frame t uses noise[noise_index[t]].
        noise_index: [T] int.
        cut: [T] bool frames that show the empty cut-away shot.
    """

    background: np.ndarray
    cut_background: np.ndarray
    pan: np.ndarray
    gain: np.ndarray
    side_light: np.ndarray
    blur: np.ndarray
    noise: np.ndarray
    noise_index: np.ndarray
    cut: np.ndarray


def stretch(n: int, fps: float, rng: np.random.Generator, lo: float, hi: float) -> tuple[int, int]:
    """(start, end) frames of a stretch lasting lo..hi seconds, away from the first and last second."""
    length = max(2, min(int(rng.uniform(lo, hi) * fps), n // 3))
    first = min(int(fps), n // 4)
    start = int(rng.integers(first, max(first + 1, n - length - first)))
    return start, min(n, start + length)


def make_camera(
    n: int,
    fps: float,
    height: int,
    width: int,
    rng: np.random.Generator,
    blur_share: float,
    cut: tuple[int, int],
) -> Camera:
    """Draw one video's camera: backdrop and its drift, light ramps, blur stretch, sensor noise.

    Args:
        n: frames.
        fps: frame rate.
        height, width: frame size.
        rng: the video's generator.
        blur_share: chance that the video has a blur stretch.
        cut: (start, end) frames of a cut-away to an empty shot, or (0, 0).
    """
    m = PAN_MARGIN
    background = make_background(height + 2 * m, width + 2 * m, rng)
    cut_background = make_background(height + 2 * m, width + 2 * m, rng)
    pan = np.clip(m + smooth_walk(n, 1.5 * fps, m / 3, rng, 2), 0, 2 * m).round().astype(int)

    # Light: a few random brightness/colour-temperature keys, linearly ramped between.
    keys = np.linspace(0, n - 1, int(rng.integers(2, 5)))
    level = np.interp(np.arange(n), keys, rng.uniform(0.72, 1.22, len(keys)))
    temp = np.interp(np.arange(n), keys, rng.uniform(-1, 1, len(keys)))
    gain = np.stack([level * (1 + 0.08 * temp), level, level * (1 - 0.08 * temp)], axis=1).astype(np.float32)
    side_light = np.interp(np.arange(n), keys, rng.uniform(-0.25, 0.25, len(keys))).astype(np.float32)

    blur = np.zeros(n, np.float32)
    if rng.random() < blur_share:
        s, e = stretch(n, fps, rng, 0.4, 1.0)
        peak = float(rng.uniform(1.0, 2.2))
        blur[s:e] = peak * np.sin(np.linspace(0, np.pi, e - s))

    sigma = float(rng.uniform(1.0, 3.5))
    noise = rng.normal(0, sigma, (6, height, width, 3)).astype(np.float32)
    noise_index = rng.integers(0, len(noise), n)
    cut_mask = np.zeros(n, bool)
    cut_mask[cut[0] : cut[1]] = True
    return Camera(background, cut_background, pan, gain, side_light, blur, noise, noise_index, cut_mask)


def head_path(
    n: int, fps: float, rng: np.random.Generator, max_roll: float, leave: tuple[int, int], drop: float
):
    """[n, 4] head pose per frame: (dx, dy, roll degrees, scale) around the person's anchor.

    Args:
        n: frames.
        fps: frame rate.
        rng: generator.
        max_roll: roll limit in degrees (dlib's HOG detector is for upright frontal faces).
        leave: (start, end) frames during which the person ducks out of the bottom of the frame, or (0, 0).
        drop: how far down (pixels) ducking takes the head: enough to clear the frame.
    """
    pose = np.zeros((n, 4), np.float32)
    pose[:, 0:2] = smooth_walk(n, 0.8 * fps, 1.0, rng, 2) * [11.0, 6.0]
    pose[:, 2] = np.clip(smooth_walk(n, 1.0 * fps, 4.5, rng)[:, 0], -max_roll, max_roll)
    pose[:, 3] = np.clip(1.0 + smooth_walk(n, 1.5 * fps, 0.04, rng)[:, 0], 0.9, 1.1)
    # A few quick nods/turns of the head: short bumps of translation.
    for _ in range(rng.poisson(n / fps / 4)):
        c, w = rng.uniform(0, n), rng.uniform(0.15, 0.35) * fps
        pose[:, 0] += float(rng.normal(0, 10)) * np.exp(-(((np.arange(n) - c) / w) ** 2))
    if leave[1] > leave[0]:
        s, e = leave
        ramp = max(2, int(0.35 * fps))
        t = np.arange(n)
        down = np.clip((t - (s - ramp)) / ramp, 0, 1) * np.clip(((e + ramp) - t) / ramp, 0, 1)
        pose[:, 1] += drop * down * down * (3 - 2 * down)
    return pose


def pose_matrix(
    anchor_sprite: tuple[float, float], anchor_frame: tuple[float, float], pose: np.ndarray, base_scale: float
):
    """[2, 3] affine sprite -> frame: rotate and scale about the sprite's eye centre, put it at the anchor.

    Args:
        anchor_sprite: (x, y) eye centre in the sprite.
        anchor_frame: (x, y) where it goes in the frame before the pose offset.
        pose: [4] (dx, dy, roll degrees, scale).
        base_scale: the person's size relative to the sprite.
    """
    dx, dy, roll, scale = (float(v) for v in pose)
    m = cv2.getRotationMatrix2D(anchor_sprite, roll, scale * base_scale)
    m[:, 2] += np.array([anchor_frame[0] + dx - anchor_sprite[0], anchor_frame[1] + dy - anchor_sprite[1]])
    return m
