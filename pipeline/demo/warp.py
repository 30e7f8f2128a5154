"""Smooth dense displacement fields from sparse landmark moves (thin-plate splines) and backward warps.

A thin-plate spline through a few control points with prescribed displacements gives the smoothest
field that moves those points exactly; the field is linear in the displacements, so per-AU basis fields
can be precomputed once per face and mixed per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[M, N] thin-plate kernel U(r) = r^2 log r between points a [M, 2] and b [N, 2]."""
    r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class ThinPlateSpline:
    """A fitted TPS mapping 2-D points to K values.

    Attributes:
        ctrl: [N, 2] control points, in normalised units (pixels / scale).
        weights: [N, K] kernel weights.
        affine: [3, K] affine part (constant, x, y).
        scale: pixels per normalised unit (conditioning: keeps r^2 log r in a sane range).
    """

    ctrl: np.ndarray
    weights: np.ndarray
    affine: np.ndarray
    scale: float

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """[M, K] values at points [M, 2] (pixels)."""
        p = np.asarray(points, np.float64) / self.scale
        basis = np.concatenate([np.ones((len(p), 1)), p], axis=1)
        return _tps_kernel(p, self.ctrl) @ self.weights + basis @ self.affine


def fit_tps(ctrl: np.ndarray, values: np.ndarray, scale: float, smooth: float = 1.0e-3) -> ThinPlateSpline:
    """Fit a TPS through control points.

    Args:
        ctrl: [N, 2] control points (pixels).
        values: [N, K] values at the control points (e.g. K = 2 for a displacement, 2*A for A bases).
        scale: pixel length used as the unit (e.g. the inter-ocular distance).
        smooth: ridge term; > 0 lets near-coincident points with different values bend instead of ring.

    Returns:
        The fitted spline.
    """
    c = np.asarray(ctrl, np.float64) / scale
    v = np.asarray(values, np.float64)
    n = len(c)
    p = np.concatenate([np.ones((n, 1)), c], axis=1)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = _tps_kernel(c, c) + smooth * np.eye(n)
    a[:n, n:] = p
    a[n:, :n] = p.T
    rhs = np.concatenate([v, np.zeros((3, v.shape[1]))], axis=0)
    sol = np.linalg.solve(a, rhs)
    return ThinPlateSpline(c, sol[:n], sol[n:], float(scale))


def dense_field(
    tps: ThinPlateSpline, height: int, width: int, origin=(0.0, 0.0), stride: int = 2
) -> np.ndarray:
    """Evaluate a TPS on a pixel grid.

    The field is smooth, so it is evaluated every `stride` pixels and interpolated (4x faster).

    Args:
        tps: fitted spline with K outputs.
        height, width: grid size.
        origin: (x, y) pixel position of grid cell (0, 0) in the spline's coordinates.
        stride: evaluation step in pixels.

    Returns:
        [height, width, K] float32.
    """
    gh, gw = (height - 1) // stride + 2, (width - 1) // stride + 2
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float64) * stride
    pts = np.stack([xs.ravel() + origin[0], ys.ravel() + origin[1]], axis=1)
    coarse = tps(pts).reshape(gh, gw, -1).astype(np.float32)
    k = coarse.shape[-1]
    # cv2.resize handles at most 4 channels at a time; sample at exact pixel positions via remap instead.
    mx, my = np.meshgrid(
        np.arange(width, dtype=np.float32) / stride, np.arange(height, dtype=np.float32) / stride
    )
    out = np.empty((height, width, k), np.float32)
    for c in range(k):
        out[..., c] = cv2.remap(coarse[..., c], mx, my, cv2.INTER_LINEAR)
    return out


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """([H, W], [H, W]) float32 x and y pixel coordinates."""
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def backward_maps(forward: np.ndarray, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps for cv2.remap that realise a forward displacement field.

    A point p of the source moves to p + d(p); the output pixel x therefore samples the source at
    x - d(x - d(x)) (one fixed-point step of inverting the field; exact for constant fields).

    Args:
        forward: [H, W, 2] float32 forward displacement (dx, dy) in pixels.
        refine: do the fixed-point step (else x - d(x)).

    Returns:
        (map_x, map_y), each [H, W] float32.
    """
    h, w = forward.shape[:2]
    gx, gy = pixel_grid(h, w)
    mx, my = gx - forward[..., 0], gy - forward[..., 1]
    if refine:
        d = cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mx, my = gx - d[..., 0], gy - d[..., 1]
    return mx, my


def maps_to_targets(
    height: int, width: int, src: np.ndarray, dst: np.ndarray, scale: float, border_step: float
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that move points src onto dst (backward TPS, exact at the points).

    The image border is pinned (zero displacement) every `border_step` pixels.

    Args:
        height, width: image size.
        src: [N, 2] points in the input image.
        dst: [N, 2] where they must land.
        scale: TPS length unit in pixels.
        border_step: spacing of pinned border points in pixels.

    Returns:
        (map_x, map_y), each [H, W] float32.
    """
    pins = border_points(height, width, border_step)
    ctrl = np.concatenate([dst, pins])
    values = np.concatenate([src - dst, np.zeros_like(pins)])
    offset = dense_field(fit_tps(ctrl, values, scale), height, width, stride=4)
    gx, gy = pixel_grid(height, width)
    return gx + offset[..., 0], gy + offset[..., 1]


def remap(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """cv2.remap with bilinear sampling and replicated borders."""
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def border_points(height: int, width: int, step: float, inset: float = 0.0) -> np.ndarray:
    """[N, 2] points along the rectangle border (optionally inset), about `step` px apart."""
    x0, y0, x1, y1 = inset, inset, width - 1 - inset, height - 1 - inset
    nx = max(2, int(round((x1 - x0) / step)) + 1)
    ny = max(2, int(round((y1 - y0) / step)) + 1)
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    top = np.stack([xs, np.full(nx, y0)], 1)
    bottom = np.stack([xs, np.full(nx, y1)], 1)
    left = np.stack([np.full(ny - 2, x0), ys[1:-1]], 1)
    right = np.stack([np.full(ny - 2, x1), ys[1:-1]], 1)
    return np.concatenate([top, bottom, left, right]).astype(np.float64)
