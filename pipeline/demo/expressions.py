"""Action units as landmark moves, turned into dense warps of a face sprite.

Each of the 12 AUs moves a set of dlib landmarks (plus a few virtual skin points: forehead, cheeks,
lip bodies) by a fixed vector at full intensity, in units of the inter-ocular distance (IOD). A
thin-plate spline turns each AU's moves into a smooth displacement field over the face; fields are
precomputed once per identity and mixed linearly by the per-frame AU intensities, then applied with
one `cv2.remap`. Skin folds that a warp cannot make (brow furrow, nasolabial folds, crow's feet,
forehead lines) are added as per-AU shading maps, and an open mouth is filled with a dark interior and
a band of upper teeth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.demo.identities import Identity
from pipeline.demo.warp import backward_maps, border_points, dense_field, fit_tps
from pipeline.tasks.definitions import AU_NAMES

N_AU = len(AU_NAMES)
# Overall strength of the landmark moves below (1.0 = the listed values, which are modest FACS-like
# amplitudes; 2x keeps expressions readable across identities in 112 px crops: at 1.25 a linear probe
# on identity-centred pixels scored only 0.18 validation EXPR F1).
MOVE_GAIN = 2.0
AU_INDEX = {name: i for i, name in enumerate(AU_NAMES)}

# Extra (virtual) skin points after the 68 landmarks, in this order.
_FOREHEAD = np.arange(68, 78)  # 0.35 IOD above each brow point 17..26
_LIP_BODY_UP = np.arange(78, 81)  # between outer and inner upper lip (50/61, 51/62, 52/63)
_LIP_BODY_LO = np.arange(81, 84)  # between outer and inner lower lip (58/67, 57/66, 56/65)
_CHEEK_UP = np.arange(84, 86)  # under each eye (image-left, image-right)
_CHEEK_MID = np.arange(86, 88)  # between lower lid and mouth corner
_N_POINTS = 88
_INNER_LIPS = np.arange(60, 68)
# Inner-lip landmarks are left out of the spline: closed lips put upper and lower inner points on top of
# each other, and a spline cannot tear; the lip-body points carry the lips instead and the gap between
# the inner lips is painted as mouth interior.
_SPLINE_POINTS = np.array([i for i in range(_N_POINTS) if i not in set(_INNER_LIPS)])


def skin_points(lm: np.ndarray, iod: float) -> np.ndarray:
    """[88, 2] landmarks followed by the virtual skin points (forehead, lip bodies, cheeks)."""
    forehead = lm[17:27] - [0.0, 0.35 * iod]
    lip_up = (lm[[50, 51, 52]] + lm[[61, 62, 63]]) / 2
    lip_lo = (lm[[58, 57, 56]] + lm[[67, 66, 65]]) / 2
    cheek_up = np.stack([lm[[40, 41]].mean(0), lm[[46, 47]].mean(0)]) + [0.0, 0.4 * iod]
    cheek_mid = np.stack([(lm[41] + lm[48]) / 2, (lm[46] + lm[54]) / 2])
    return np.concatenate([lm, forehead, lip_up, lip_lo, cheek_up, cheek_mid]).astype(np.float64)


def au_moves(lm: np.ndarray) -> np.ndarray:
    """Displacement of every skin point per AU at full intensity.

    Args:
        lm: [68, 2] landmarks (only used to tell the image-left side from the right).

    Returns:
        [12, 88, 2] displacements in IOD units (x right, y down).
    """
    cx = float(lm[27:31, 0].mean())
    pts_x = np.concatenate([lm[:, 0], lm[17:27, 0], lm[[51, 51, 51], 0], lm[[57, 57, 57], 0]])
    pts_x = np.concatenate([pts_x, [cx - 1, cx + 1, cx - 1, cx + 1]])
    out_sign = np.sign(pts_x - cx)  # +1 on the image-right side: "outwards" = away from the midline
    moves = np.zeros((N_AU, _N_POINTS, 2))

    def move(au: str, idx, dx_out: float = 0.0, dy: float = 0.0) -> None:
        idx = np.atleast_1d(idx)
        moves[AU_INDEX[au], idx, 0] += dx_out * out_sign[idx]
        moves[AU_INDEX[au], idx, 1] += dy

    def forehead_follows(au: str, share: float) -> None:
        moves[AU_INDEX[au], _FOREHEAD] = share * moves[AU_INDEX[au], 17:27]

    # AU1 inner brow raiser: the inner brow ends go up (oblique brows).
    move("AU1", [21, 22], dy=-0.17)
    move("AU1", [20, 23], dy=-0.13)
    move("AU1", [19, 24], dy=-0.07)
    move("AU1", [18, 25], dy=-0.03)
    move("AU1", [38, 43], dy=-0.012)
    forehead_follows("AU1", 0.5)
    # AU2 outer brow raiser.
    move("AU2", [17, 26, 18, 25], dy=-0.16)
    move("AU2", [19, 24], dy=-0.12)
    move("AU2", [20, 23], dy=-0.06)
    move("AU2", [21, 22], dy=-0.02)
    move("AU2", [37, 44], dy=-0.015)
    forehead_follows("AU2", 0.5)
    # AU4 brow lowerer: brows down and drawn together, upper lids follow a little.
    move("AU4", [21, 22], dx_out=-0.06, dy=0.12)
    move("AU4", [20, 23], dx_out=-0.04, dy=0.11)
    move("AU4", [19, 24], dx_out=-0.02, dy=0.09)
    move("AU4", [18, 25], dy=0.06)
    move("AU4", [17, 26], dy=0.04)
    move("AU4", [37, 38, 43, 44], dy=0.015)
    forehead_follows("AU4", 0.4)
    # AU6 cheek raiser: cheeks and lower lids up, eyes narrow from below.
    move("AU6", [40, 41, 46, 47], dy=-0.05)
    move("AU6", [36, 45], dy=-0.02)
    move("AU6", [37, 38, 43, 44], dy=0.015)
    move("AU6", _CHEEK_UP, dy=-0.1)
    move("AU6", _CHEEK_MID, dy=-0.07)
    move("AU6", [1, 2, 14, 15], dy=-0.03)
    # AU7 lid tightener: both lids close in on the eye.
    move("AU7", [40, 41, 46, 47], dy=-0.045)
    move("AU7", [37, 38, 43, 44], dy=0.025)
    move("AU7", [36, 45], dx_out=-0.01)
    # AU10 upper lip raiser: upper lip and nose wings up.
    move("AU10", [50, 51, 52], dy=-0.1)
    move("AU10", [49, 53], dy=-0.07)
    move("AU10", _LIP_BODY_UP, dy=-0.09)
    move("AU10", [61, 62, 63], dy=-0.09)
    move("AU10", [48, 54, 60, 64], dy=-0.03)
    move("AU10", [31, 35], dx_out=0.02, dy=-0.04)
    move("AU10", [32, 33, 34], dy=-0.02)
    move("AU10", _CHEEK_MID, dy=-0.03)
    # AU12 lip corner puller: corners out and up, cheeks follow.
    move("AU12", [48, 54], dx_out=0.12, dy=-0.1)
    move("AU12", [60, 64], dx_out=0.11, dy=-0.09)
    move("AU12", [49, 53, 59, 55], dx_out=0.06, dy=-0.05)
    move("AU12", [50, 52], dy=-0.02)
    move("AU12", [58, 56, 61, 63, 67, 65], dx_out=0.04, dy=-0.01)
    move("AU12", _CHEEK_MID, dx_out=0.02, dy=-0.05)
    move("AU12", _CHEEK_UP, dy=-0.03)
    # AU15 lip corner depressor.
    move("AU15", [48, 54], dx_out=-0.02, dy=0.1)
    move("AU15", [60, 64], dy=0.09)
    move("AU15", [49, 53], dy=0.03)
    move("AU15", [59, 55], dy=0.06)
    move("AU15", [58, 56], dy=0.02)
    # AU23 lip tightener: mouth narrower, lips thinner.
    move("AU23", [48, 54, 60, 64], dx_out=-0.05)
    move("AU23", [49, 53, 59, 55], dx_out=-0.03)
    move("AU23", [50, 51, 52], dy=0.025)
    move("AU23", [56, 57, 58], dy=-0.025)
    move("AU23", _LIP_BODY_UP, dy=0.012)
    move("AU23", _LIP_BODY_LO, dy=-0.012)
    # AU24 lip presser: lips pressed together, chin boss pushed up.
    move("AU24", [49, 50, 51, 52, 53], dy=0.04)
    move("AU24", [55, 56, 57, 58, 59], dy=-0.05)
    move("AU24", [48, 54], dx_out=-0.02)
    move("AU24", _LIP_BODY_UP, dy=0.03)
    move("AU24", _LIP_BODY_LO, dy=-0.04)
    move("AU24", [7, 8, 9], dy=-0.03)
    # AU25 lips part.
    move("AU25", [61, 62, 63], dy=-0.035)
    move("AU25", [65, 66, 67], dy=0.08)
    move("AU25", _LIP_BODY_LO, dy=0.06)
    move("AU25", [56, 57, 58], dy=0.06)
    move("AU25", [55, 59], dy=0.04)
    move("AU25", _LIP_BODY_UP, dy=-0.02)
    move("AU25", [50, 51, 52], dy=-0.015)
    move("AU25", [7, 8, 9], dy=0.02)
    # AU26 jaw drop: chin, jaw and lower lip down.
    move("AU26", [65, 66, 67], dy=0.16)
    move("AU26", [56, 57, 58], dy=0.17)
    move("AU26", [55, 59], dy=0.13)
    move("AU26", _LIP_BODY_LO, dy=0.165)
    move("AU26", 8, dy=0.2)
    move("AU26", [7, 9], dy=0.18)
    move("AU26", [6, 10], dy=0.13)
    move("AU26", [5, 11], dy=0.08)
    move("AU26", [4, 12], dy=0.04)
    move("AU26", [61, 62, 63], dy=-0.01)
    move("AU26", [48, 54, 60, 64], dy=0.04)
    return moves * MOVE_GAIN


def _draw_shading(shape: tuple[int, int], lm: np.ndarray, moves: np.ndarray, iod: float) -> np.ndarray:
    """[12, H, W] float32 per-AU darkening (negative = brightening) at full intensity.

    The folds are drawn where the landmarks end up at full intensity, as soft lines.
    """
    h, w = shape
    maps = np.zeros((N_AU, h, w), np.float32)
    cx = float(lm[27:31, 0].mean())

    def at(au: str, i: int) -> np.ndarray:
        return lm[i] + moves[AU_INDEX[au], i] * iod

    def line(au: str, pts: list, strength: float, width: float = 0.03) -> None:
        canvas = np.zeros((h, w), np.float32)
        arr = np.round(np.array(pts, np.float64) * 4).astype(np.int32)
        cv2.polylines(canvas, [arr], False, 1.0, max(1, int(width * iod)), cv2.LINE_AA, shift=2)
        maps[AU_INDEX[au]] += strength * cv2.GaussianBlur(canvas, (0, 0), max(0.8, 0.5 * width * iod))

    def blob(au: str, centre, radius: float, strength: float) -> None:
        canvas = np.zeros((h, w), np.float32)
        cv2.circle(canvas, tuple(int(round(v)) for v in centre), max(1, int(radius * iod)), 1.0, -1)
        maps[AU_INDEX[au]] += strength * cv2.GaussianBlur(canvas, (0, 0), 0.6 * radius * iod)

    up = np.array([0.0, -iod])
    # AU1/AU2: horizontal forehead lines (central for AU1, lateral for AU2).
    for k, lift in enumerate((0.3, 0.45, 0.6)):
        y = float(lm[17:27, 1].min()) - lift * iod
        line(
            "AU1",
            [(cx - 0.35 * iod, y + 0.02 * iod), (cx, y), (cx + 0.35 * iod, y + 0.02 * iod)],
            0.10 - 0.02 * k,
        )
        for s in (-1, 1):
            line("AU2", [(cx + s * 0.3 * iod, y), (cx + s * 0.75 * iod, y + 0.05 * iod)], 0.08 - 0.02 * k)
    # AU4: vertical furrows between the brows and a shadow under them.
    for s, i in ((-1, 21), (1, 22)):
        top = at("AU4", i) + [-s * 0.05 * iod, 0.0]
        line("AU4", [top, top + 0.25 * up * -1 + [s * 0.01 * iod, 0]], 0.22)
    for i in (19, 24):
        blob("AU4", at("AU4", i) + 0.12 * -up, 0.12, 0.10)
    # AU6: crow's feet beside the outer eye corners, a fold under the lower lids, raised cheeks lit.
    for s, i in ((-1, 36), (1, 45)):
        c = at("AU6", i) + [s * 0.08 * iod, 0.0]
        for a in (-25, 0, 25):
            d = np.array([np.cos(np.radians(a)) * s, np.sin(np.radians(a))]) * 0.14 * iod
            line("AU6", [c, c + d], 0.10)
    for lid in ((40, 41), (46, 47)):
        p = (at("AU6", lid[0]) + at("AU6", lid[1])) / 2 + [0.0, 0.12 * iod]
        line("AU6", [p - [0.12 * iod, 0], p + [0.12 * iod, 0.0]], 0.10)
    # Nasolabial folds (deepened by AU12 and AU10): nose wing to just outside the lip corner.
    for au, strength in (("AU12", 0.2), ("AU10", 0.16)):
        for s, wing, corner in ((-1, 31, 48), (1, 35, 54)):
            a = at(au, wing) + [s * 0.06 * iod, 0.02 * iod]
            c = at(au, corner) + [s * 0.1 * iod, 0.05 * iod]
            mid = (a + c) / 2 + [s * 0.05 * iod, 0.0]
            line(au, [a, mid, c], strength, width=0.04)
    # AU15: folds below the lowered lip corners.
    for s, i in ((-1, 48), (1, 54)):
        p = at("AU15", i)
        line("AU15", [p + [s * 0.03 * iod, 0.02 * iod], p + [s * 0.07 * iod, 0.2 * iod]], 0.12)
    # AU24 / AU23: pressed lips push the chin boss up (shadow below); tightened lips darken the lip line.
    blob("AU24", at("AU24", 57) + [0.0, 0.15 * iod], 0.12, 0.08)
    line("AU23", [at("AU23", 48), at("AU23", 51) + [0, 0.03 * iod], at("AU23", 54)], 0.08)
    # AU26: shadow under the dropped lower lip.
    line("AU26", [at("AU26", 58) + [0, 0.08 * iod], at("AU26", 56) + [0, 0.08 * iod]], 0.08, width=0.05)
    return maps


@dataclass(frozen=True)
class Rig:
    """Precomputed per-identity expression machinery, over a region of interest of the sprite.

    Attributes:
        roi: (x0, y0, x1, y1) of the face region in the sprite.
        fields: [12, R, C, 2] float32 forward displacement per AU at full intensity (pixels).
        shading: [12, R, C] float32 darkening per AU.
        inner_lips: [8, 2] float32 neutral inner-lip landmarks (sprite coords).
        inner_moves: [12, 8, 2] float32 inner-lip displacement per AU (pixels).
        iod: inter-ocular distance (pixels).
    """

    roi: tuple[int, int, int, int]
    fields: np.ndarray
    shading: np.ndarray
    inner_lips: np.ndarray
    inner_moves: np.ndarray
    iod: float


def build_rig(identity: Identity) -> Rig:
    """Fit the per-AU displacement fields and shading maps of one identity (~50 ms)."""
    lm, iod = identity.landmarks.astype(np.float64), identity.iod
    h, w = identity.image.shape[:2]
    x0 = int(max(0, lm[:, 0].min() - 0.55 * iod))
    x1 = int(min(w, lm[:, 0].max() + 0.55 * iod))
    y0 = int(max(0, lm[17:27, 1].min() - 0.95 * iod))
    y1 = int(min(h, lm[8, 1] + 0.75 * iod))
    rh, rw = y1 - y0, x1 - x0

    pts = skin_points(lm, iod) - [x0, y0]
    moves = au_moves(lm)  # [12, 88, 2] IOD units
    pins = border_points(rh, rw, 0.4 * iod)
    ctrl = np.concatenate([pts[_SPLINE_POINTS], pins])
    values = np.concatenate([moves[:, _SPLINE_POINTS], np.zeros((N_AU, len(pins), 2))], axis=1) * iod
    values = values.transpose(1, 0, 2).reshape(len(ctrl), N_AU * 2)  # columns: AU-major, (dx, dy)
    tps = fit_tps(ctrl, values, scale=iod, smooth=2.0e-3)
    field = dense_field(tps, rh, rw, stride=3).reshape(rh, rw, N_AU, 2)
    # Taper to exactly zero at the ROI edge so the warped patch pastes back without a seam.
    yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
    edge = np.minimum(np.minimum(xx, rw - 1 - xx), np.minimum(yy, rh - 1 - yy))
    taper = np.clip(edge / (0.25 * iod), 0, 1)
    field *= (taper * taper * (3 - 2 * taper))[..., None, None]
    fields = np.ascontiguousarray(field.transpose(2, 0, 1, 3))

    shading = _draw_shading((rh, rw), lm - [x0, y0], moves, iod)
    # The mouth polygon starts closed on the seam between the inner lips: neutral faces show no
    # interior, and only the AU moves open it.
    inner = lm[_INNER_LIPS] - [x0, y0]
    seam = (inner[[1, 2, 3]] + inner[[7, 6, 5]]) / 2
    inner[[1, 2, 3]] = seam
    inner[[7, 6, 5]] = seam
    inner = inner.astype(np.float32)
    inner_moves = (moves[:, _INNER_LIPS] * iod).astype(np.float32)
    return Rig((x0, y0, x1, y1), fields, shading, inner, inner_moves, float(iod))


def _chaikin(poly: np.ndarray, iterations: int = 2) -> np.ndarray:
    """[N * 2^iterations, 2] corner-cut (rounded) version of a closed polygon [N, 2]."""
    for _ in range(iterations):
        nxt = np.roll(poly, -1, axis=0)
        poly = np.stack([0.75 * poly + 0.25 * nxt, 0.25 * poly + 0.75 * nxt], axis=1).reshape(-1, 2)
    return poly


def _paint_mouth(patch: np.ndarray, inner: np.ndarray, iod: float) -> None:
    """Fill the gap between the inner lips with a dark mouth and a band of upper teeth (in place).

    Args:
        patch: [R, C, 3] float32 RGB.
        inner: [8, 2] inner-lip points (60..67, clockwise from the left corner) after the AU moves.
        iod: inter-ocular distance (caps the teeth height).
    """
    opening = float(np.max(inner[[7, 6, 5], 1] - inner[[1, 2, 3], 1]))
    if opening < 0.8:
        return
    # Work in a small window around the mouth (speed).
    bx0, by0 = np.floor(inner.min(0)).astype(int) - 3
    bx1, by1 = np.ceil(inner.max(0)).astype(int) + 4
    bx0, by0 = max(bx0, 0), max(by0, 0)
    bx1, by1 = min(bx1, patch.shape[1]), min(by1, patch.shape[0])
    if bx1 <= bx0 or by1 <= by0:
        return
    size = (by1 - by0, bx1 - bx0)
    canvas = np.zeros(size, np.uint8)
    poly = _chaikin(inner - [bx0, by0])
    cv2.fillPoly(canvas, [np.round(poly * 8).astype(np.int32)], 255, cv2.LINE_AA, 3)
    mouth = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), 0.7)
    # Upper teeth: the part of the opening within teeth_h of its top edge (mouth minus itself shifted
    # down). A narrow slit shows mostly shadow; the teeth show as the lips open further.
    teeth_h = min(0.3 * opening, 0.06 * iod)
    shifted = cv2.warpAffine(mouth, np.float32([[1, 0, 0], [0, 1, teeth_h]]), (size[1], size[0]))
    show = float(np.clip((opening - 2.0) / 6.0, 0.0, 0.9))
    teeth = (mouth * np.clip(1 - shifted, 0, 1) * show)[..., None]
    mouth = mouth[..., None]
    dark = np.array((45.0, 14.0, 18.0), np.float32)
    white = np.array((196.0, 186.0, 172.0), np.float32)
    win = patch[by0:by1, bx0:bx1]
    win *= 1 - mouth
    win += dark * (mouth - teeth) + white * teeth


def render_expression(
    identity: Identity, rig: Rig, intensity: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The identity's sprite with AUs applied.

    Args:
        identity: the neutral sprite.
        rig: its precomputed rig.
        intensity: [12] AU intensities in [0, 1].
        out: optional [H, W, C >= 3] uint8 buffer holding the neutral sprite outside the face region
            (e.g. an RGBA copy reused frame after frame); only its face region's RGB is rewritten.

    Returns:
        [H, W, 3] uint8 RGB sprite (a new array), or `out`.
    """
    image = identity.image.copy() if out is None else out
    x0, y0, x1, y1 = rig.roi
    intensity = np.asarray(intensity, np.float32)
    if float(intensity.max(initial=0.0)) < 1e-3:
        image[y0:y1, x0:x1, :3] = identity.image[y0:y1, x0:x1]
        return image
    rh, rw = y1 - y0, x1 - x0
    active = [k for k in range(N_AU) if intensity[k] > 1e-3]
    # Explicit sums over the active AUs: cheaper than a BLAS call, which also fights torch's threads.
    forward = np.zeros((rh, rw, 2), np.float32)
    shade = np.ones((rh, rw), np.float32)
    for k in active:
        forward += intensity[k] * rig.fields[k]
        shade -= intensity[k] * rig.shading[k]
    mx, my = backward_maps(forward)
    patch = cv2.remap(
        identity.image, mx + x0, my + y0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    patch *= np.clip(shade, 0.3, 1.5)[..., None]
    inner = rig.inner_lips + np.tensordot(intensity, rig.inner_moves, axes=1)
    _paint_mouth(patch, inner, rig.iod)
    image[y0:y1, x0:x1, :3] = np.clip(patch, 0, 255).astype(np.uint8)
    return image


def moved_landmarks(identity: Identity, intensity: np.ndarray) -> np.ndarray:
    """[68, 2] landmarks after the AU moves (sprite coords)."""
    moves = au_moves(identity.landmarks)[:, :68]
    return identity.landmarks + np.tensordot(np.asarray(intensity, np.float64), moves, axes=1) * identity.iod
