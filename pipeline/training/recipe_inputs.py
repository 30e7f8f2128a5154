"""Per-image inputs a fine-tuning recipe needs besides the crops of its own view.

EMMA (seed 001) adds the scores of a second, expression-pretrained CNN (`fer`'s mini-Xception) run on
the full-face crops of the same frames; the CNN is frozen, so its scores are computed once, here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.faces.crops import gather_crops

EMMA_VIEW = "face"  # the expression CNN was trained on whole faces


def recipe_extras(
    recipe: str, faces_dir: Path, index: pl.DataFrame, stride: int, device: str
) -> dict[str, np.ndarray]:
    """{name: [N, ...]} aligned with the crops `index` lists (rows of `gather_crops` with this stride).

    Raises:
        ValueError: the face view's crops do not line up with the index (different frames).
    """
    if recipe != "emma":
        return {}
    from pipeline.models.fer_cnn import fer_scores, load_fer_cnn  # only EMMA needs the CNN

    tracks = list(dict.fromkeys(index["track"].to_list()))
    faces, face_index = gather_crops(faces_dir, tracks, EMMA_VIEW, stride=stride)
    if not face_index.equals(index):
        raise ValueError(
            f"{faces_dir}: the '{EMMA_VIEW}' crops are not of the same frames as the recipe's view"
        )
    return {"fer": fer_scores(load_fer_cnn(), faces, device=device).astype(np.float32)}
