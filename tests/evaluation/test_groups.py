"""Fold grouping by connected components of shared videos and subjects, and each run's roles."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation.folds import assign_folds, groups_split_across, run_roles, run_tracks, track_groups


def tracks_table(rows: list[tuple[str, str, str | None]], n_frames: int = 100, split: str = "Train_Set"):
    return pl.DataFrame(
        {
            "track": [r[0] for r in rows],
            "video": [r[1] for r in rows],
            "subject": [r[2] for r in rows],
            "split": [split] * len(rows),
            "n_frames": [n_frames] * len(rows),
        }
    )


def test_both_tracks_of_a_two_person_video_share_a_group_even_with_different_subjects():
    tracks = tracks_table([("v1_left", "v1", "anna"), ("v1_right", "v1", "ben"), ("v2", "v2", "carl")])
    groups = dict(track_groups(tracks).select("track", "group").iter_rows())
    assert groups["v1_left"] == groups["v1_right"] != groups["v2"]


def test_components_chain_through_videos_and_subjects():
    # anna is in v1 (with ben) and v3; ben is in v4; dora is alone: {v1_*, v3, v4} form one component.
    tracks = tracks_table(
        [
            ("v1_left", "v1", "anna"),
            ("v1_right", "v1", "ben"),
            ("v3", "v3", "anna"),
            ("v4", "v4", "ben"),
            ("v5", "v5", "dora"),
            ("v6", "v6", None),
        ]
    )
    groups = dict(track_groups(tracks).select("track", "group").iter_rows())
    assert len({groups[t] for t in ("v1_left", "v1_right", "v3", "v4")}) == 1
    assert len(set(groups.values())) == 3
    # The group name does not depend on the row order.
    shuffled = track_groups(tracks.sample(fraction=1.0, shuffle=True, seed=3))
    assert dict(shuffled.select("track", "group").iter_rows()) == groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_group_spans_two_folds_and_folds_are_balanced(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(14):
        for v in range(int(rng.integers(1, 4))):
            rows.append((f"s{s}_v{v}", f"s{s}_v{v}", f"s{s}"))
    rows += [("duo_left", "duo", "s0"), ("duo_right", "duo", "s1")]  # joins subjects s0 and s1
    tracks = tracks_table(rows).with_columns(pl.Series("n_frames", rng.integers(50, 500, len(rows))))
    folds = assign_folds(tracks, n_folds=5, seed=seed)
    for column in ("group", "subject", "video"):
        assert folds.group_by(column).agg(pl.col("fold").n_unique())["fold"].max() == 1, column
    assert folds.filter(pl.col("subject").is_in(["s0", "s1"]))["fold"].n_unique() == 1
    assert sorted(folds["fold"].unique().to_list()) == [0, 1, 2, 3, 4]
    assert folds.equals(assign_folds(tracks, n_folds=5, seed=seed))


def test_too_few_groups_for_the_folds_is_an_error():
    tracks = tracks_table([("a", "a", "x"), ("b", "b", "x"), ("c", "c", "y")])
    with pytest.raises(ValueError, match="2 independent groups"):
        assign_folds(tracks, n_folds=3, seed=0)


def test_every_cv_run_tests_one_fold_tunes_the_next_and_trains_on_the_rest():
    tracks = tracks_table([(f"t{i}", f"t{i}", f"p{i}") for i in range(10)])
    folds = assign_folds(tracks, n_folds=5, seed=0)
    fold_of = dict(folds.select("track", "fold").iter_rows())
    roles = pl.concat([run_roles(folds, f"fold_{k}", n_folds=5, seed=0) for k in range(5)])
    for k in range(5):
        tracks_by_role = run_tracks(roles, f"fold_{k}")
        assert {fold_of[t] for t in tracks_by_role["test"]} == {k}
        assert {fold_of[t] for t in tracks_by_role["tune"]} == {(k + 1) % 5}
        assert {fold_of[t] for t in tracks_by_role["train"]} == set(range(5)) - {k, (k + 1) % 5}
    assert groups_split_across(folds, roles) == []
    # Every track is tested exactly once over the CV runs.
    assert roles.filter(pl.col("role") == "test")["track"].sort().to_list() == sorted(fold_of)


def test_official_run_tests_on_validation_and_tunes_inside_train():
    train = tracks_table([(f"t{i}", f"t{i}", f"p{i}") for i in range(8)])
    val = tracks_table([(f"v{i}", f"v{i}", f"q{i}") for i in range(3)], split="Validation_Set")
    folds = assign_folds(pl.concat([train, val]), n_folds=4, seed=0)
    roles = run_tracks(run_roles(folds, "official", n_folds=4, seed=0), "official")
    assert roles["test"] == ["v0", "v1", "v2"]
    assert roles["tune"] and set(roles["tune"]) | set(roles["train"]) == {f"t{i}" for i in range(8)}
    assert not set(roles["tune"]) & set(roles["train"])


def test_official_run_leaves_out_train_tracks_that_share_a_person_with_validation():
    rows = tracks_table([("a", "a", "p"), ("b", "b", "q"), ("c", "c", "r"), ("d", "d", "s")])
    rows = rows.with_columns(pl.Series("split", ["Train_Set", "Train_Set", "Train_Set", "Validation_Set"]))
    rows = rows.with_columns(pl.Series("subject", ["p", "q", "r", "p"]))  # p on both sides
    folds = assign_folds(rows, n_folds=2, seed=0)
    roles = run_roles(folds, "official", n_folds=2, seed=0)
    assert groups_split_across(folds, roles) == []
    assert "a" not in roles["track"].to_list() and roles.filter(pl.col("role") == "test")[
        "track"
    ].to_list() == ["d"]
