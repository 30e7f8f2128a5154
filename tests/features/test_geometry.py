"""Landmark geometry: invariant to where the face is, its size and its roll; what remains is expression."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.features.geometry import normalise_landmarks


def face(rng: np.random.Generator) -> np.ndarray:
    """[68, 2] points with eyes at (-1, 0) and (1, 0) around which the rest scatters."""
    points = rng.normal(0, 1, (68, 2))
    points[36:42] = [-1, 0] + 0.1 * rng.normal(size=(6, 2))
    points[42:48] = [1, 0] + 0.1 * rng.normal(size=(6, 2))
    return points


@pytest.mark.parametrize("seed", [0, 1])
def test_similarity_transforms_do_not_change_the_geometry(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = face(rng)
    angle, scale, shift = 0.4, 37.0, np.array([120.0, -40.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * points @ rotation.T + shift
    a, b = normalise_landmarks(points[None]), normalise_landmarks(moved.reshape(1, -1))
    np.testing.assert_allclose(a, b, atol=1e-4)
    # Eye centres land on (-0.5, 0) and (0.5, 0): origin between them, unit inter-ocular distance.
    normalised = a.reshape(68, 2)
    np.testing.assert_allclose(normalised[36:42].mean(axis=0), [-0.5, 0.0], atol=1e-5)
    np.testing.assert_allclose(normalised[42:48].mean(axis=0), [0.5, 0.0], atol=1e-5)


def test_expression_changes_survive_and_degenerate_faces_are_refused() -> None:
    rng = np.random.default_rng(2)
    points = face(rng)
    open_mouth = points.copy()
    open_mouth[57] += [0.0, 0.5]  # the lower lip drops
    difference = normalise_landmarks(open_mouth[None]) - normalise_landmarks(points[None])
    assert np.abs(difference).max() > 0.1 and np.count_nonzero(np.abs(difference) > 1e-6) <= 2
    collapsed = points.copy()
    collapsed[36:48] = 0.0
    with pytest.raises(ValueError, match="eye centres coincide"):
        normalise_landmarks(collapsed[None])
