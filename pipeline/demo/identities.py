"""Visually distinct demo identities built from real photos.

Each identity starts from one of the two real portraits (optionally mirrored) and takes:
- the face shape of a real LFW face (dlib landmarks on the upsampled 25x25 image), blended with random
  proportion changes (face width and length, eye spacing, nose length, mouth width, brow height), applied
  as a landmark-driven thin-plate warp;
- that LFW face's low-frequency shading (brow ridge, cheek and jaw shadows) blended into the skin;
- a skin tone, hair (or hat) colour and clothing colour of its own (LAB colour transforms on soft masks).

The result is a neutral head-and-shoulders sprite with a person cut-out mask and dlib landmarks
re-detected on the sprite itself (so the expression rig starts from what dlib sees).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from pipeline.demo import sources
from pipeline.demo.sources import BROWS, EYE_L, EYE_R, JAW, MIRROR_PERM, DonorFace, Portrait, eye_centers
from pipeline.demo.warp import maps_to_targets, remap

# Face box (dlib's detection square) is about 2.2 inter-ocular distances (eye centre to eye centre).
BOX_PER_IOD = 2.2

# Skin tones as cheek colour targets (L, a, b) in OpenCV's 8-bit LAB, light to deep; the face keeps
# its own texture around the target.
SKIN_TONES = (
    (215.0, 137.0, 140.0),
    (195.0, 141.0, 146.0),
    (180.0, 146.0, 152.0),
    (160.0, 136.0, 154.0),
    (142.0, 146.0, 158.0),
    (118.0, 148.0, 157.0),
    (94.0, 146.0, 152.0),
    (72.0, 142.0, 146.0),
)
# Hair (or hat) colours as LAB targets (L, a, b).
HAIR_COLOURS = (
    (40.0, 128.0, 130.0),  # black
    (70.0, 136.0, 145.0),  # dark brown
    (95.0, 150.0, 160.0),  # auburn
    (175.0, 130.0, 165.0),  # blonde
    (165.0, 128.0, 128.0),  # grey
    (120.0, 136.0, 152.0),  # light brown
)


@dataclass(frozen=True)
class Recipe:
    """How one identity is made (all drawn from the corpus seed)."""

    source: int
    mirror: bool
    donor: int
    shape_mix: float  # 0..1: how far the face shape goes towards the donor's
    face_width: float  # jaw x scale about the face centre
    face_length: float  # chin drop, in IOD
    eye_spacing: float  # eye x scale about the face centre
    nose_length: float  # nose tip/base drop, in IOD
    mouth_width: float  # mouth x scale about its centre
    brow_height: float  # brow lift, in IOD (negative = lower)
    shading_mix: float  # weight of the donor's low-frequency shading
    skin_tone: int
    hair_colour: int
    clothes_hue: float  # chroma rotation of the clothes, degrees
    clothes_gain: float
    f0: float  # voice pitch in Hz (for the audio track)


@dataclass(frozen=True)
class Identity:
    """A neutral head-and-shoulders sprite.

    Attributes:
        name: subject id (e.g. "subject03").
        recipe: how it was made.
        image: [H, W, 3] uint8 RGB, neutral expression.
        alpha: [H, W] float32 person mask in [0, 1].
        landmarks: [68, 2] float32 dlib landmarks detected on the sprite.
        iod: inter-ocular distance in pixels.
    """

    name: str
    recipe: Recipe
    image: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray
    iod: float

    @property
    def f0(self) -> float:
        return self.recipe.f0


def sprite_geometry(face_box: float) -> tuple[int, int, float, float]:
    """(width, height, iod, eye_y) of a sprite whose dlib face box is about `face_box` px.

    The sprite reaches 2.3 IOD above the eyes (hair) and 3.9 IOD below (shoulders: enough to run
    past the bottom of a frame twice the face box tall).
    """
    iod = face_box / BOX_PER_IOD
    return int(round(5.6 * iod)), int(round(6.2 * iod)), iod, 2.3 * iod


def _shape(rng: np.random.Generator, donor: int) -> dict[str, float | int]:
    """Random face-shape part of a recipe."""
    return dict(
        donor=int(donor),
        shape_mix=float(rng.uniform(0.45, 0.8)),
        face_width=float(rng.uniform(0.9, 1.1)),
        face_length=float(rng.uniform(-0.08, 0.1)),
        eye_spacing=float(rng.uniform(0.95, 1.05)),
        nose_length=float(rng.uniform(-0.05, 0.08)),
        mouth_width=float(rng.uniform(0.9, 1.12)),
        brow_height=float(rng.uniform(-0.06, 0.06)),
        shading_mix=float(rng.uniform(0.35, 0.65)),
    )


def draw_recipes(n: int, rng: np.random.Generator) -> list[Recipe]:
    """n identity recipes, spreading sources, mirroring, donors and colours as evenly as possible."""
    n_sources = len(sources.load_portraits())
    n_donors = len(sources.load_donor_faces())
    donors = rng.choice(n_donors, size=n, replace=n > n_donors)
    tones = np.concatenate([rng.permutation(len(SKIN_TONES)) for _ in range(n // len(SKIN_TONES) + 1)])
    hairs = np.concatenate([rng.permutation(len(HAIR_COLOURS)) for _ in range(n // len(HAIR_COLOURS) + 1)])
    recipes = []
    for i in range(n):
        shape = _shape(rng, donors[i])
        recipes.append(
            Recipe(
                source=i % n_sources,
                mirror=bool((i // n_sources) % 2),
                **shape,
                skin_tone=int(tones[i]),
                hair_colour=int(hairs[i]),
                clothes_hue=float(rng.uniform(0.0, 360.0)),
                clothes_gain=float(rng.uniform(0.7, 1.4)),
                f0=float(rng.uniform(100.0, 230.0)),
            )
        )
    return recipes


def redraw_shape(recipe: Recipe, rng: np.random.Generator) -> Recipe:
    """The same person's colours and source photo with another donor face shape (a retry when dlib
    struggles with the first one)."""
    n_donors = len(sources.load_donor_faces())
    return replace(recipe, **_shape(rng, int(rng.integers(n_donors))))


def _align(portrait: Portrait, face_box: float, mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Portrait -> sprite frame: eyes level, IOD to scale, eyes centred at eye_y.

    Returns:
        (image [H, W, 3] uint8, alpha [H, W] float32, landmarks [68, 2] float32).
    """
    width, height, iod, eye_y = sprite_geometry(face_box)
    el, er = eye_centers(portrait.landmarks)
    angle = np.degrees(np.arctan2(er[1] - el[1], er[0] - el[0]))
    scale = iod / float(np.linalg.norm(er - el))
    centre = (el + er) / 2
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), scale)
    m[:, 2] += np.array([width / 2, eye_y]) - centre
    size = (width, height)
    image = cv2.warpAffine(portrait.image, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(portrait.alpha, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lm = (portrait.landmarks @ m[:, :2].T + m[:, 2]).astype(np.float32)
    if mirror:
        image, alpha = image[:, ::-1].copy(), alpha[:, ::-1].copy()
        lm = lm[MIRROR_PERM].copy()
        lm[:, 0] = width - 1 - lm[:, 0]
    return image, alpha, lm


def _close_mouth(image: np.ndarray, lm: np.ndarray, iod: float) -> tuple[np.ndarray, np.ndarray]:
    """Relax a posed smile into a neutral closed mouth (the astronaut portrait smiles with teeth).

    Lip corners go down and in, the lower lip comes up, and what is left of the gap between the lips is
    inpainted from the lips around it with a thin dark seam where they meet.

    Returns:
        (image, landmarks) after the change.
    """
    h, w = image.shape[:2]
    dst = lm.copy()
    cx = lm[48:68, 0].mean()
    gap = float(np.mean(lm[[67, 66, 65], 1] - lm[[61, 62, 63], 1]))
    for i in (48, 54, 60, 64):
        dst[i, 1] += 0.06 * iod
        dst[i, 0] -= np.sign(lm[i, 0] - cx) * 0.05 * iod
    for i in (49, 53, 59, 55):
        dst[i, 1] += 0.02 * iod
    dst[[65, 66, 67], 1] -= 0.8 * gap
    dst[[55, 56, 57, 58, 59], 1] -= 0.5 * gap
    dst[[7, 8, 9], 1] -= 0.2 * gap
    # Upper inner lip stays; pin it so the lower lip slides up under it instead of dragging it along.
    keep = [i for i in range(68) if i not in (61, 62, 63)]
    maps = maps_to_targets(h, w, lm[keep], dst[keep], iod, border_step=iod)
    image = remap(image, maps)

    # Inpaint the remaining gap between the inner lips from the lips around it.
    inner = np.concatenate([dst[60:65], dst[65:68]])
    hole = np.zeros((h, w), np.uint8)
    cv2.fillPoly(hole, [np.round(inner * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    hole = cv2.dilate(hole, np.ones((3, 3), np.uint8))
    image = cv2.inpaint(image, hole, 3, cv2.INPAINT_TELEA)
    seam = (dst[61:64] + dst[[67, 66, 65]]) / 2
    seam = np.concatenate([dst[60:61], seam, dst[64:65]])
    overlay = image.copy()
    cv2.polylines(
        overlay, [np.round(seam * 4).astype(np.int32)], False, (70, 30, 30), 1, cv2.LINE_AA, shift=2
    )
    image = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)
    dst[[65, 66, 67]] = dst[[63, 62, 61]]
    return image, dst


def _reshape(
    image: np.ndarray, alpha: np.ndarray, lm: np.ndarray, donor: DonorFace, r: Recipe, iod: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move the face shape towards the donor's and apply the recipe's proportion changes."""
    h, w = image.shape[:2]
    # Align the donor's landmarks on the eyes and nose bridge (a similarity: keeps its proportions).
    ref = np.concatenate([EYE_R, EYE_L, np.arange(27, 31)])
    m, _ = cv2.estimateAffinePartial2D(donor.landmarks[ref], lm[ref])
    donor_lm = donor.landmarks @ m[:, :2].T + m[:, 2]
    dst = lm + r.shape_mix * (donor_lm - lm)
    dst[np.concatenate([EYE_R, EYE_L])] = lm[np.concatenate([EYE_R, EYE_L])]  # eyes keep their own place

    cx = float(lm[27:31, 0].mean())
    dst[JAW, 0] = cx + (dst[JAW, 0] - cx) * r.face_width
    chin_weight = np.clip(1.0 - np.abs(np.arange(17) - 8) / 5.0, 0, 1)  # 1 at the chin, 0 from the cheeks up
    dst[JAW, 1] += r.face_length * iod * chin_weight
    eyes = np.concatenate([EYE_R, EYE_L])
    dst[eyes, 0] = cx + (dst[eyes, 0] - cx) * r.eye_spacing
    dst[30:36, 1] += r.nose_length * iod
    mouth_cx = float(dst[48:68, 0].mean())
    dst[48:68, 0] = mouth_cx + (dst[48:68, 0] - mouth_cx) * r.mouth_width
    dst[48:68, 1] += 0.5 * r.nose_length * iod + 0.3 * r.face_length * iod
    dst[BROWS, 1] -= r.brow_height * iod

    # Cap the moves so a noisy donor shape cannot fold the face.
    move = dst - lm
    norm = np.linalg.norm(move, axis=1, keepdims=True)
    move *= np.minimum(1.0, 0.3 * iod / np.maximum(norm, 1e-6))
    dst = (lm + move).astype(np.float32)
    # Inner-lip points stay out of the spline: on a closed mouth the upper and lower ones coincide, and
    # the outer lips carry the mouth anyway.
    keep = np.r_[0:60]
    maps = maps_to_targets(h, w, lm[keep], dst[keep], iod, border_step=iod)
    return remap(image, maps), remap(alpha, maps), dst


def _face_mask(shape: tuple[int, int], lm: np.ndarray, iod: float) -> np.ndarray:
    """[H, W] float32 soft mask of the inner face (jaw line up to a little above the brows)."""
    pts = np.concatenate([lm[JAW], lm[BROWS] - [0, 0.25 * iod]])
    mask = np.zeros(shape, np.float32)
    cv2.fillConvexPoly(mask, np.round(cv2.convexHull(pts.astype(np.float32))).astype(np.int32), 1.0)
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.2 * iod) | 1,) * 2))
    return cv2.GaussianBlur(mask, (0, 0), 0.12 * iod)


def _blend_shading(
    image: np.ndarray, lm: np.ndarray, donor: DonorFace, weight: float, iod: float
) -> np.ndarray:
    """Replace part of the face's low-frequency lightness with the donor's (aligned on all landmarks)."""
    h, w = image.shape[:2]
    m, _ = cv2.estimateAffinePartial2D(donor.landmarks, lm)
    grey = cv2.warpAffine(donor.image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    mask = _face_mask((h, w), lm, iod)
    inside = mask > 0.5
    # Match the donor's lightness statistics to the face's before mixing.
    lum = lab[..., 0]
    grey = (grey - grey[inside].mean()) / (grey[inside].std() + 1e-6) * lum[inside].std() + lum[inside].mean()
    sigma = 0.3 * iod
    low_face = cv2.GaussianBlur(lum, (0, 0), sigma)
    low_donor = cv2.GaussianBlur(grey, (0, 0), sigma)
    lab[..., 0] = lum + weight * mask * (low_donor - low_face)
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _skin_mask(
    lab: np.ndarray, alpha: np.ndarray, lm: np.ndarray, iod: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft skin probability: colour close to the cheeks', on the person, above the chest.

    Returns:
        ([H, W] float32 mask, [3] median cheek LAB colour).
    """
    h, w = alpha.shape
    samples = []
    for upper, lower in ((41, 48), (46, 54)):  # cheek centres: between lower lid and mouth corner
        c = (lm[upper] + lm[lower]) / 2
        r = max(2, int(0.15 * iod))
        x, y = int(round(c[0])), int(round(c[1]))
        samples.append(lab[y - r : y + r, x - r : x + r].reshape(-1, 3))
    ref = np.median(np.concatenate(samples), axis=0)
    # Judge colour on a blurred copy so wrinkles, pores and stubble count as skin (else they keep the old
    # tone and show up as coloured lines).
    smooth = cv2.GaussianBlur(lab, (0, 0), 0.08 * iod)
    chroma = ((smooth[..., 1] - ref[1]) ** 2 + (smooth[..., 2] - ref[2]) ** 2) / (2 * 14.0**2)
    light = (smooth[..., 0] > 0.35 * ref[0]) & (smooth[..., 0] < 1.8 * ref[0] + 10)
    # Where skin can be: the face up to the forehead, and the neck (hair can have a skin-like colour).
    region = np.zeros((h, w), np.uint8)
    face = np.concatenate([lm[JAW], lm[BROWS] - [0.0, 0.55 * iod]])
    cv2.fillConvexPoly(region, np.round(cv2.convexHull(face.astype(np.float32))).astype(np.int32), 1)
    neck = np.array(
        [lm[4], lm[12], [lm[12, 0], lm[8, 1] + 1.8 * iod], [lm[4, 0], lm[8, 1] + 1.8 * iod]], np.float32
    )
    cv2.fillConvexPoly(region, np.round(neck).astype(np.int32), 1)
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.25 * iod) | 1,) * 2))
    region = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.08 * iod)
    skin = np.exp(-chroma) * light * alpha * region
    return cv2.GaussianBlur(skin.astype(np.float32), (0, 0), 1.0), ref


def _recolour(image: np.ndarray, alpha: np.ndarray, lm: np.ndarray, r: Recipe, iod: float) -> np.ndarray:
    """Skin tone, hair colour and clothes colour changes (LAB, on soft masks)."""
    h, w = alpha.shape
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    skin, ref = _skin_mask(lab, alpha, lm, iod)
    yy = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    out = lab.copy()

    tone = np.array(SKIN_TONES[r.skin_tone], np.float32)
    out[..., 0] = lab[..., 0] * (1 + skin * (tone[0] / ref[0] - 1))
    # Chroma moves to the target and its spread shrinks (ruddy wrinkles would stay red on a deep tone).
    for c in (1, 2):
        out[..., c] = lab[..., c] + skin * (tone[c] + 0.6 * (lab[..., c] - ref[c]) - lab[..., c])

    # Hair (or hat): not skin, on the person, above the mouth, outside the face proper.
    face = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(face, np.round(cv2.convexHull(lm)).astype(np.int32), 1.0)
    face = cv2.GaussianBlur(cv2.dilate(face, np.ones((5, 5), np.uint8)), (0, 0), 2.0)
    above_mouth = np.clip((lm[51, 1] - yy) / (0.3 * iod), 0, 1)
    hair = alpha * (1 - skin) * above_mouth * (1 - face)
    if hair.sum() > 10:
        sel = hair > 0.5
        med = np.median(lab[sel], axis=0) if sel.any() else lab[..., :].reshape(-1, 3).mean(0)
        target = np.array(HAIR_COLOURS[r.hair_colour], np.float32)
        new = np.empty_like(lab)
        new[..., 0] = target[0] + (lab[..., 0] - med[0]) * 0.9
        new[..., 1:] = target[1:] + (lab[..., 1:] - med[1:]) * 0.4
        out = out * (1 - hair[..., None]) + new * hair[..., None]

    # Clothes: not skin, on the person, below the chin: rotate the chroma, scale the lightness.
    below = np.clip((yy - lm[8, 1] - 0.2 * iod) / (0.3 * iod), 0, 1)
    cloth = alpha * (1 - skin) * below
    t = np.radians(r.clothes_hue)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    new = np.empty_like(lab)
    new[..., 0] = np.clip(lab[..., 0] * r.clothes_gain, 0, 255)
    new[..., 1] = 128 + a * np.cos(t) - b * np.sin(t)
    new[..., 2] = 128 + a * np.sin(t) + b * np.cos(t)
    out = out * (1 - cloth[..., None]) + new * cloth[..., None]
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def build_identity(name: str, recipe: Recipe, face_box: float) -> Identity:
    """Make one neutral identity sprite from its recipe (deterministic)."""
    portrait = sources.load_portraits()[recipe.source]
    donor = sources.load_donor_faces()[recipe.donor]
    _, _, iod, _ = sprite_geometry(face_box)
    image, alpha, lm = _align(portrait, face_box, recipe.mirror)
    if float(np.mean(lm[[65, 66, 67], 1] - lm[[61, 62, 63], 1])) > 0.06 * iod:
        image, lm = _close_mouth(image, lm, iod)
    image, alpha, lm = _reshape(image, alpha, lm, donor, recipe, iod)
    image = _blend_shading(image, lm, donor, recipe.shading_mix, iod)
    image = _recolour(image, alpha, lm, recipe, iod)
    # The rig starts from what dlib sees on the finished face (on a plain grey backdrop).
    backdrop = (image * alpha[..., None] + 128 * (1 - alpha[..., None])).astype(np.uint8)
    found = sources.detect_landmarks(backdrop, upsample=0, near=tuple(lm[30]))
    if found is not None and np.abs(found[0] - lm).mean() < 0.25 * iod:
        lm = found[0]
    return Identity(name, recipe, image, alpha.astype(np.float32), lm.astype(np.float32), iod)
