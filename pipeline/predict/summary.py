"""A small JSON-able summary of one video's prediction table (`pipeline.predict.table`), per person and for
the whole video: what the report shows first and what `affectflow predict` writes next to the table.

Every statistic of the model outputs is taken over the rows with `face_found` (the frames where the person's
face was seen and used): filled rows repeat a neighbour's outputs and prior rows are not about the face, so
counting them would weigh a few frames twice or describe the prior. `basis` in the summary says so.

Keys (stable; a value is null when its task's columns are absent or there is no row to take it over):

- `video` str | null, `frames` int (timeline frames: distinct `frame` values), `fps` float | null (from
  `timestamp` = frame / fps; null when the time stamps are unknown), `seconds` float | null (frames / fps),
  `people` int (distinct `face_id`), `basis` "face_found", `tasks` list[str] (of "expr", "au", "va", "ce",
  "emi": those with columns in the table), `undecoded_frames` int (frames whose every row says
  `face_reason` == "undecoded"), `notes` list[str] (plain sentences about what the summary cannot show).
- `overall`: the statistics below over every person's found rows, plus `detection_rate` (share of the
  timeline frames on which at least one face was found) and `mimicry` null (mimicry is per person).
- `persons`: one dict per `face_id` (rows with a null `face_id`, the table of a video where nobody was
  found, belong to no person), in id order, with `face_id` int, `frames` int (its rows), `seconds`
  float | null, `detection_rate` (share of its rows with `face_found`), `filled_rate` (`face_filled`),
  `rejected_rate` (`face_rejected`), the statistics below, and `mimicry` {name: value} | null (the track's
  value; the `mimicry_` prefix dropped).

Statistics (over found rows; all null for a person whose face is never found):
  `frames_with_face` int; `expression_share` {class: share} (lower-case class names as in the probability
  columns, every class listed, shares of the found rows, summing to 1); `expression_top` str | null (the
  largest share); `valence_mean`, `valence_sd`, `arousal_mean`, `arousal_sd` (sd with ddof 0, so one frame
  gives 0); `au_rate` {"AU01": mean of `AU01_c`, ...}; `compound_share` {class: share} (lower case, without
  the `compound_` prefix); `compound_dominant` str | null and `compound_dominant_share` float | null.
"""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl

from pipeline.tasks.definitions import COMPOUND_CLASSES, EXPR_CLASSES

EXPRESSIONS = tuple(name.lower() for name in EXPR_CLASSES)  # the probability column names
COMPOUNDS = tuple(name.lower() for name in COMPOUND_CLASSES)
AU_DECISION = re.compile(r"^AU\d\d_c$")
BASIS = "face_found"


def _number(value: object) -> float | None:
    """A plain float for JSON, None for null / NaN."""
    if value is None:
        return None
    value = float(value)  # type: ignore[arg-type]
    return None if math.isnan(value) else value


def _fps(table: pl.DataFrame) -> float | None:
    """The frame rate behind `timestamp` = frame / fps (median over frames > 0), None when unknown."""
    rows = table.filter(
        (pl.col("frame") > 0) & pl.col("timestamp").is_not_null() & pl.col("timestamp").is_finite()
    )
    rows = rows.filter(pl.col("timestamp") > 0)
    if rows.height == 0:
        return None
    fps = float(np.median(rows["frame"].to_numpy() / rows["timestamp"].to_numpy()))
    return fps if math.isfinite(fps) and fps > 0 else None


def tasks_present(table: pl.DataFrame) -> list[str]:
    """The tasks whose columns are in the table ("expr", "au", "va", "ce", "emi")."""
    columns = set(table.columns)
    present = []
    if "expression" in columns or any(name in columns for name in EXPRESSIONS):
        present.append("expr")
    if any(AU_DECISION.match(c) or re.match(r"^AU\d\d$", c) for c in columns):
        present.append("au")
    if "valence" in columns or "arousal" in columns:
        present.append("va")
    if "compound" in columns or any(c.startswith("compound_") for c in columns):
        present.append("ce")
    if any(c.startswith("mimicry_") for c in columns):
        present.append("emi")
    return present


def _shares(labels: pl.Series, classes: tuple[str, ...]) -> dict[str, float] | None:
    """{class: share of the labels} over the non-null labels (compared in lower case); None without any."""
    labels = labels.drop_nulls().str.to_lowercase()
    if labels.len() == 0:
        return None
    counts = dict(labels.value_counts().iter_rows())
    names = list(classes) + sorted(set(counts) - set(classes))  # an unexpected name is kept, not dropped
    return {name: counts.get(name, 0) / labels.len() for name in names}


def _top(shares: dict[str, float] | None) -> tuple[str | None, float | None]:
    if not shares:
        return None, None
    name = max(shares, key=lambda k: shares[k])  # first of equal shares in class order
    return name, shares[name]


def _stats(found: pl.DataFrame) -> dict:
    """The statistics over found rows (see the module docstring); every value None when there are none."""
    columns = set(found.columns)
    out: dict = {"frames_with_face": found.height}
    empty = found.height == 0

    shares = None
    if not empty and "expression" in columns:
        shares = _shares(found["expression"], EXPRESSIONS)
    elif not empty and any(name in columns for name in EXPRESSIONS):  # no decision column: argmax
        names = [name for name in EXPRESSIONS if name in columns]
        probs = found.select(names).to_numpy().astype(np.float64)
        ok = ~np.isnan(probs).any(axis=1)
        decided = pl.Series(
            [names[i] for i in np.argmax(probs[ok], axis=1)] if ok.any() else [], dtype=pl.String
        )
        shares = _shares(decided, EXPRESSIONS)
    out["expression_share"] = shares
    out["expression_top"] = _top(shares)[0]

    for name in ("valence", "arousal"):
        values = found[name].drop_nulls().drop_nans() if name in columns and not empty else None
        ok = values is not None and values.len() > 0
        out[f"{name}_mean"] = _number(values.mean()) if ok else None
        out[f"{name}_sd"] = _number(values.std(ddof=0)) if ok else None

    au = sorted(c for c in columns if AU_DECISION.match(c))
    if au and not empty:
        out["au_rate"] = {c[:-2]: _number(found[c].cast(pl.Float64).mean()) for c in au}
    else:
        out["au_rate"] = None

    compound = None
    if not empty and "compound" in columns:
        compound = _shares(found["compound"], COMPOUNDS)
    out["compound_share"] = compound
    out["compound_dominant"], out["compound_dominant_share"] = _top(compound)
    return out


def _mimicry(rows: pl.DataFrame) -> dict[str, float | None] | None:
    """The track's mimicry values (the same on every row: the first non-null one), None without columns."""
    names = [c for c in rows.columns if c.startswith("mimicry_")]
    if not names or rows.height == 0:
        return None
    out = {}
    for c in names:
        values = rows[c].drop_nulls().drop_nans()
        out[c.removeprefix("mimicry_")] = _number(values[0]) if values.len() else None
    return out


def summarise(table: pl.DataFrame) -> dict:
    """Summarise one video's prediction table (rows = timeline frames x person tracks).

    Args:
        table: the `pipeline.predict.table` table of ONE video; any task's columns may be absent.

    Returns:
        A JSON-able dict with the keys of the module docstring.

    Raises:
        ValueError: the table holds rows of several videos.
    """
    videos = table["video"].unique().drop_nulls().to_list() if "video" in table.columns else []
    if len(videos) > 1:
        raise ValueError(f"summarise takes one video's table, got {len(videos)}: {sorted(videos)[:5]}")
    fps = _fps(table) if table.height else None
    frames = table["frame"].n_unique() if table.height else 0
    found = table.filter(pl.col("face_found").fill_null(False)) if table.height else table
    undecoded = 0
    if table.height and "face_reason" in table.columns:
        per_frame = table.group_by("frame").agg((pl.col("face_reason") == "undecoded").fill_null(False).all())
        undecoded = int(per_frame["face_reason"].sum())

    overall = _stats(found)
    frames_with_face = found["frame"].n_unique() if found.height else 0
    overall = {"detection_rate": frames_with_face / frames if frames else None, **overall, "mimicry": None}

    persons = []
    notes = []
    # A video where nobody was found has rows with a null face_id: frames, but no person.
    for face_id in sorted(table["face_id"].drop_nulls().unique().to_list()) if table.height else []:
        rows = table.filter(pl.col("face_id") == face_id)
        person_found = rows.filter(pl.col("face_found").fill_null(False))
        n = rows.height
        person = {
            "face_id": int(face_id),
            "frames": n,
            "seconds": n / fps if fps else None,
            "detection_rate": person_found.height / n,
            "filled_rate": _number(rows["face_filled"].cast(pl.Float64).mean()),
            "rejected_rate": _number(rows["face_rejected"].cast(pl.Float64).mean()),
            **_stats(person_found),
            "mimicry": _mimicry(rows),
        }
        persons.append(person)
        if person_found.height == 0:
            notes.append(f"Person {face_id}: no usable face on any frame; the outputs are priors, not shown.")

    present = tasks_present(table)
    if undecoded:
        notes.append(f"{undecoded} of {frames} frames did not decode.")
    missing = [name for name in ("expr", "au", "va") if name not in present]
    if table.height and missing:
        notes.append(f"The bundle has no {', '.join(missing)} outputs.")
    if table.height and fps is None:
        notes.append("The frame rate is unknown: durations are not given, time is in frames.")

    return {
        "video": videos[0] if videos else None,
        "frames": frames,
        "fps": fps,
        "seconds": frames / fps if fps else None,
        "people": len(persons),
        "basis": BASIS,
        "tasks": present,
        "undecoded_frames": undecoded,
        "notes": notes,
        "overall": overall,
        "persons": persons,
    }
