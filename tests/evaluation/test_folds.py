"""Track groups (connected over shared videos and subjects) and folds made of whole groups."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation.folds import assign_folds, track_groups


def make_tracks(n_subjects: int, seed: int = 0, two_person_videos: int = 2) -> pl.DataFrame:
    """Single-person videos (1-3 per subject) plus two-person videos joining two subjects each."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for v in range(rng.integers(1, 4)):
            rows.append({"track": f"s{s}_v{v}", "video": f"s{s}_v{v}", "subject": f"s{s}", "n_frames": 0})
    for p in range(two_person_videos):
        a, b = rng.choice(n_subjects, 2, replace=False)
        for side, s in (("left", a), ("right", b)):
            rows.append({"track": f"pair{p}_{side}", "video": f"pair{p}", "subject": f"s{s}", "n_frames": 0})
    frames = rng.integers(50, 500, len(rows))
    return pl.DataFrame(rows).with_columns(pl.Series("n_frames", frames, dtype=pl.Int64))


def test_groups_join_shared_videos_and_subjects():
    tracks = pl.DataFrame(
        {
            "track": ["a1", "a2", "pair_left", "pair_right", "b1", "c1"],
            "video": ["va1", "va2", "pair", "pair", "vb1", "vc1"],
            "subject": ["A", "A", "A", "B", "B", "C"],
        }
    )
    groups = dict(zip(*track_groups(tracks).select("track", "group"), strict=True))
    # A's videos, the two-person video and (through it) B's video form one component; C is alone.
    assert {groups[t] for t in ("a1", "a2", "pair_left", "pair_right", "b1")} == {"a1"}
    assert groups["c1"] == "c1"
    # The group name does not depend on the row order.
    reversed_groups = dict(zip(*track_groups(tracks.reverse()).select("track", "group"), strict=True))
    assert reversed_groups == groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_group_subjects_and_videos_and_balance_frames(seed):
    tracks = make_tracks(13, seed)
    folds = assign_folds(tracks, n_folds=5, seed=seed)
    for key in ("subject", "video", "group"):
        assert folds.group_by(key).agg(pl.col("fold").n_unique())["fold"].max() == 1, key
    assert sorted(folds["fold"].unique().to_list()) == [0, 1, 2, 3, 4]
    load = folds.group_by("fold").agg(pl.col("n_frames").sum())["n_frames"].to_numpy()
    biggest_group = folds.group_by("group").agg(pl.col("n_frames").sum())["n_frames"].max()
    assert load.max() - load.min() <= biggest_group
    assert folds.equals(assign_folds(tracks, n_folds=5, seed=seed))


def test_folds_need_enough_groups():
    with pytest.raises(ValueError, match="3 independent groups .* cannot fill 5 folds"):
        assign_folds(make_tracks(3, two_person_videos=0), n_folds=5, seed=0)
    # Two-person videos merge subjects: 4 subjects joined in pairs by them are 2 groups, not 4.
    paired = pl.concat(
        [
            make_tracks(4, two_person_videos=0),
            pl.DataFrame(
                {
                    "track": ["p0_left", "p0_right", "p1_left", "p1_right"],
                    "video": ["p0", "p0", "p1", "p1"],
                    "subject": ["s0", "s1", "s2", "s3"],
                    "n_frames": [100, 100, 100, 100],
                }
            ),
        ]
    )
    with pytest.raises(ValueError, match="2 independent groups"):
        assign_folds(paired, n_folds=3, seed=0)
