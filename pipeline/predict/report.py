"""A one-page, self-contained HTML report of one video's predictions (`pipeline.predict.table`).

Everything is inline (CSS in a <style>, figures and face thumbnails as base64 PNG), so the file can be mailed
or opened offline. Figures are drawn with matplotlib's `Figure` (no pyplot: no global backend or state).
Order: what a reader wants first (video, duration, people, detection rate, expression shares, mean
valence-arousal), then one timeline figure per person, the sampled faces, notes and the model bundle.
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import polars as pl
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from pipeline.predict.annotate import PERSON_COLOURS
from pipeline.predict.summary import COMPOUNDS, EXPRESSIONS

DPI = 80
THUMBNAIL = 96  # px, the longer side of a contact-sheet face
MAX_BINS = 600  # time bins of a timeline plot: a long video is averaged down to this many
NO_FACE = "#e4e4e4"
EXPRESSION_COLOURS = {
    "neutral": "#8da0aa",
    "anger": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happiness": "#f0b400",
    "sadness": "#1f77b4",
    "surprise": "#ff7f0e",
    "other": "#2ca02c",
}
COMPOUND_COLOURS = ("#9467bd", "#f0b400", "#1f77b4", "#8c564b", "#d62728", "#17becf", "#e377c2")

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1000px; color: #222; line-height: 1.4; padding: 0 12px; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 30px; border-bottom: 1px solid #ddd; }
h3 { font-size: 16px; margin-bottom: 4px; }
.facts { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border-bottom: 1px solid #e2e2e2; padding: 4px 10px; text-align: left; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px; }
.alert { background: #fff4e0; border: 1px solid #f0c070; padding: 10px 14px; border-radius: 4px; }
.sheet { display: flex; flex-wrap: wrap; gap: 8px; }
.sheet figure { margin: 0; width: 112px; text-align: center; font-size: 11px; color: #444; }
.sheet img { max-width: 96px; max-height: 96px; border: 1px solid #ccc; }
img.plot { max-width: 100%; }
.muted { color: #777; }
"""


# --- small formatting helpers ---------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _duration(seconds: float | None, frames: int) -> str:
    if seconds is None:
        return f"{frames} frames (frame rate unknown)"
    text = f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    return f"{text} ({frames} frames)"


def _person_colour(face_id: int) -> str:
    b, g, r = PERSON_COLOURS[face_id % len(PERSON_COLOURS)]  # the annotated video's colour (BGR)
    return f"#{r:02x}{g:02x}{b:02x}"


def _png(figure: Figure) -> str:
    """A figure as an inline <img>."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="" src="data:image/png;base64,{data}">'


# --- figures ----------------------------------------------------------------------------------------------


def _expression_share_figure(persons: list[dict]) -> Figure | None:
    """Horizontal bars: share of found frames per expression class, one bar per person."""
    shown = [p for p in persons if p.get("expression_share")]
    if not shown:
        return None
    classes = list(EXPRESSIONS) + sorted({c for p in shown for c in p["expression_share"]} - set(EXPRESSIONS))
    height = 0.8 / len(shown)
    figure = Figure(figsize=(8.5, 0.5 + 0.28 * len(classes) * max(1.0, 0.6 * len(shown))))
    ax = figure.subplots()
    y = np.arange(len(classes))
    for k, person in enumerate(shown):
        shares = np.array([person["expression_share"].get(c, 0.0) for c in classes])
        offset = y - 0.4 + height * (k + 0.5)
        ax.barh(
            offset,
            shares,
            height=height * 0.92,
            color=_person_colour(person["face_id"]),
            label=f"person {person['face_id']}",
        )
        for yy, share in zip(offset, shares, strict=True):
            if share > 0:
                ax.text(share + 0.01, yy, f"{100 * share:.0f}%", va="center", fontsize=8)
    ax.set_yticks(y, [c.capitalize() for c in classes])
    ax.invert_yaxis()  # first class on top
    top = max(max(p["expression_share"].values()) for p in shown)
    ax.set_xlim(0, min(1.0, top + 0.12) if top < 0.88 else 1.1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_xlabel("share of the frames with the face found")
    ax.spines[["top", "right"]].set_visible(False)
    if len(shown) > 1:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def _bins(n: int) -> int:
    """Frames per time bin so that a timeline has at most MAX_BINS bins."""
    return max(1, math.ceil(n / MAX_BINS))


def _binned(values: np.ndarray, k: int) -> np.ndarray:
    """[T, C] -> [ceil(T / k), C]: mean of each run of k rows, ignoring NaN (NaN where a bin has none)."""
    t, c = values.shape
    b = math.ceil(t / k)
    padded = np.full((b * k, c), np.nan)
    padded[:t] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bin (no face) stays NaN
        return np.nanmean(padded.reshape(b, k, c), axis=1)


def _edges(centres: np.ndarray, step: float) -> np.ndarray:
    """[B] bin centres -> [B + 1] edges (midpoints; the ends half a step out)."""
    if len(centres) == 1:
        return np.array([centres[0] - step / 2, centres[0] + step / 2])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _decided_codes(labels: list[str | None], found: np.ndarray, classes: list[str], k: int) -> np.ndarray:
    """[B] the most frequent decided class of each bin (index into classes), -1 where no face was found."""
    onehot = np.full((len(labels), len(classes)), np.nan)
    index = {name: i for i, name in enumerate(classes)}
    for t, label in enumerate(labels):
        if found[t] and label is not None and label.lower() in index:
            onehot[t] = 0.0
            onehot[t, index[label.lower()]] = 1.0
    binned = _binned(onehot, k)
    codes = np.full(len(binned), -1)
    ok = ~np.isnan(binned).all(axis=1)
    codes[ok] = np.nanargmax(binned[ok], axis=1)
    return codes


def _band(ax, edges: np.ndarray, codes: np.ndarray, colours: list[str], label: str) -> None:
    """A one-row colour band: codes[b] indexes colours, -1 = no face (light grey)."""
    cmap = ListedColormap([NO_FACE, *colours])
    ax.pcolormesh(edges, [0, 1], (codes + 1)[None, :], cmap=cmap, vmin=-0.5, vmax=len(colours) + 0.5)
    ax.set_yticks([0.5], [label], fontsize=8)
    ax.tick_params(axis="y", length=0)


def _person_figure(rows: pl.DataFrame, fps: float | None) -> Figure | None:
    """One person's timelines, sharing the time axis: valence-arousal, expression probabilities with the
    decided expression as a band, AU probabilities as a heatmap, compound probabilities. Rows of frames
    without a found face are blank."""
    columns = set(rows.columns)
    n = rows.height
    found = rows["face_found"].fill_null(False).to_numpy()
    if n == 0 or not found.any():
        return None
    k = _bins(n)
    timestamps = rows["timestamp"].to_numpy().astype(np.float64)
    use_seconds = fps is not None and np.isfinite(timestamps).all()
    t = timestamps if use_seconds else rows["frame"].to_numpy().astype(np.float64)
    centres = _binned(t[:, None], k)[:, 0]
    edges = _edges(centres, (1 / fps if use_seconds else 1.0) * k)
    short = len(centres) <= 30  # few points: markers, or a lone point would not show
    faceless = _binned((~found)[:, None].astype(np.float64), k)[:, 0] == 1.0  # [B] bins without a face

    def values(names: list[str]) -> np.ndarray:
        """[B, C] binned values of the found rows."""
        array = rows.select(names).cast(pl.Float64).to_numpy().copy()  # polars may hand out a read-only view
        array[~found] = np.nan
        return _binned(array, k)

    expr_probs = [c for c in EXPRESSIONS if c in columns]
    au = sorted(c for c in columns if len(c) == 4 and c.startswith("AU") and c[2:].isdigit())
    compound = [f"compound_{c}" for c in COMPOUNDS if f"compound_{c}" in columns]
    panels: list[tuple[str, float]] = []
    if "valence" in columns or "arousal" in columns:
        panels.append(("va", 1.6))
    if expr_probs:
        panels.append(("expr", 1.6))
    if expr_probs or "expression" in columns:
        panels.append(("expr_band", 0.28))
    if au:
        panels.append(("au", 0.22 * len(au) + 0.3))
    if compound:
        panels.append(("ce", 1.3))
    if "compound" in columns:
        panels.append(("ce_band", 0.28))
    if not panels:
        return None

    figure = Figure(figsize=(10, sum(h for _, h in panels) + 0.8))
    axes = figure.subplots(len(panels), 1, sharex=True, height_ratios=[h for _, h in panels], squeeze=False)
    axes = axes[:, 0]
    legend = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False}
    for ax, (panel, _) in zip(axes, panels, strict=True):
        if panel in ("va", "ce"):  # the other panels draw no-face bins grey themselves
            ax.fill_between(
                edges,
                0,
                1,
                where=np.append(faceless, faceless[-1]),
                step="post",
                color=NO_FACE,
                lw=0,
                transform=ax.get_xaxis_transform(),
            )
        if panel == "va":
            for name, colour in (("valence", "#1f77b4"), ("arousal", "#d62728")):
                if name in columns:
                    ax.plot(
                        centres,
                        values([name])[:, 0],
                        color=colour,
                        lw=1.4,
                        label=name,
                        marker="o" if short else None,
                        ms=3,
                    )
            ax.axhline(0, color="#999", lw=0.6)
            ax.set_ylim(-1.05, 1.05)
            ax.set_ylabel("V / A", fontsize=9)
            ax.legend(**legend)
        elif panel == "expr":
            # Stacked steps over the bin edges: a bin without a face (NaN) is a gap, not a slope to 0,
            # and a single frame still has an area.
            probs = values(expr_probs)
            tops = np.cumsum(probs, axis=1)
            for j, name in enumerate(expr_probs):
                low = tops[:, j - 1] if j else np.zeros(len(tops))
                ax.fill_between(
                    edges,
                    np.append(low, low[-1]),
                    np.append(tops[:, j], tops[-1, j]),
                    step="post",
                    color=EXPRESSION_COLOURS[name],
                    label=name.capitalize(),
                    lw=0,
                )
            ax.set_facecolor(NO_FACE)  # the stack covers every bin with a face
            ax.set_ylim(0, 1)
            ax.set_ylabel("expression\nprobability", fontsize=9)
            ax.legend(**legend)
        elif panel == "expr_band":
            labels = rows["expression"].to_list() if "expression" in columns else None
            if labels is None:  # no decision column: the most probable class
                probs = rows.select(expr_probs).to_numpy()
                labels = [expr_probs[i] for i in np.nanargmax(np.nan_to_num(probs, nan=-1), axis=1)]
            classes = list(EXPRESSIONS)
            codes = _decided_codes(labels, found, classes, k)
            _band(ax, edges, codes, [EXPRESSION_COLOURS[c] for c in classes], "decided")
        elif panel == "au":
            heat = values(au).T  # [AU, B]
            mesh = ax.pcolormesh(
                edges, np.arange(len(au) + 1), np.ma.masked_invalid(heat), cmap="viridis", vmin=0, vmax=1
            )
            ax.set_facecolor(NO_FACE)
            ax.set_yticks(np.arange(len(au)) + 0.5, au, fontsize=7)
            ax.invert_yaxis()
            ax.set_ylabel("AU probability", fontsize=9)
            colourbar_ax = ax.inset_axes((1.01, 0.0, 0.015, 1.0))
            figure.colorbar(mesh, cax=colourbar_ax)
            colourbar_ax.tick_params(labelsize=7)
        elif panel == "ce":
            probs = values(compound)
            for j, name in enumerate(compound):
                label = name.removeprefix("compound_").replace("_", " ").capitalize()
                ax.plot(
                    centres,
                    probs[:, j],
                    color=COMPOUND_COLOURS[j % 7],
                    lw=1.1,
                    label=label,
                    marker="o" if short else None,
                    ms=3,
                )
            ax.set_ylim(0, 1)
            ax.set_ylabel("compound\nprobability", fontsize=9)
            ax.legend(**legend)
        elif panel == "ce_band":
            codes = _decided_codes(rows["compound"].to_list(), found, list(COMPOUNDS), k)
            _band(ax, edges, codes, list(COMPOUND_COLOURS), "compound")
        ax.tick_params(labelsize=8)
        ax.set_xlim(edges[0], edges[-1])
    axes[-1].set_xlabel("time (s)" if use_seconds else "frame", fontsize=9)
    figure.subplots_adjust(hspace=0.12)
    return figure


# --- HTML sections --------------------------------------------------------------------------------------


def _people_table(persons: list[dict]) -> str:
    has_expr = any(p.get("expression_share") for p in persons)
    has_va = any(p.get("valence_mean") is not None for p in persons)
    has_au = any(p.get("au_rate") for p in persons)
    has_ce = any(p.get("compound_dominant") for p in persons)
    head = ["person", "detected", "filled"]
    head += ["top expression"] * has_expr + ["valence (mean ± sd)", "arousal (mean ± sd)"] * has_va
    head += ["most active AUs"] * has_au + ["compound"] * has_ce
    lines = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for p in persons:
        cells = [
            f'<td><span class="swatch" style="background:{_person_colour(p["face_id"])}"></span>'
            f"{_e(p['face_id'])}</td>",
            f'<td class="num">{_pct(p.get("detection_rate"))}</td>',
            f'<td class="num">{_pct(p.get("filled_rate"))}</td>',
        ]
        if has_expr:
            top = p.get("expression_top")
            share = p["expression_share"][top] if top else None
            cells.append(f"<td>{_e(top.capitalize()) + ' (' + _pct(share) + ')' if top else '–'}</td>")
        if has_va:
            for name in ("valence", "arousal"):
                mean, sd = p.get(f"{name}_mean"), p.get(f"{name}_sd")
                text = "–" if mean is None else f"{mean:+.2f} ± {sd:.2f}"
                cells.append(f'<td class="num">{_e(text)}</td>')
        if has_au:
            rates = p.get("au_rate") or {}
            active = sorted(((r, a) for a, r in rates.items() if r), reverse=True)[:3]
            cells.append(f"<td>{_e(', '.join(f'{a} {_pct(r)}' for r, a in active) or '–')}</td>")
        if has_ce:
            name = p.get("compound_dominant")
            text = f"{name.replace('_', ' ')} ({_pct(p.get('compound_dominant_share'))})" if name else "–"
            cells.append(f"<td>{_e(text)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(lines) + "</table>"


def _mimicry_table(mimicry: dict[str, float | None]) -> str:
    cells = "".join(f"<th>{_e(k.replace('_', ' ').capitalize())}</th>" for k in mimicry)
    values = "".join(f'<td class="num">{_num(v)}</td>' for v in mimicry.values())
    head = '<p class="muted">Mimicry intensity (per track, 0 to 1):</p>'
    return f"{head}<table><tr>{cells}</tr><tr>{values}</tr></table>"


def _thumbnail(rgb: np.ndarray) -> str:
    """An RGB uint8 [H, W, 3] crop as an inline PNG, the longer side at most THUMBNAIL px."""
    h, w = rgb.shape[:2]
    scale = min(1.0, THUMBNAIL / max(h, w, 1))
    if scale < 1:
        rgb = cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a face thumbnail as PNG")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(data.tobytes()).decode("ascii")}">'


def _contact_sheet(faces: list[tuple[int, int, np.ndarray]], table: pl.DataFrame, fps: float | None) -> str:
    decided: dict[tuple[int, int], str] = {}
    if "expression" in table.columns and table.height:
        frames = sorted({frame for _, frame, _ in faces})
        rows = table.filter(pl.col("frame").is_in(frames)).select("face_id", "frame", "expression")
        decided = {(f, t): e for f, t, e in rows.iter_rows() if e is not None}
    items = []
    for face_id, frame, rgb in sorted(faces, key=lambda item: (item[0], item[1])):
        when = f"{frame / fps:.1f} s" if fps else f"frame {frame}"
        caption = f"person {face_id} · frame {frame}" + (f" · {when}" if fps else "")
        expression = decided.get((face_id, frame))
        colour = EXPRESSION_COLOURS.get((expression or "").lower(), "#444")
        label = f'<br><b style="color:{colour}">{_e(expression.capitalize())}</b>' if expression else ""
        items.append(f"<figure>{_thumbnail(rgb)}<figcaption>{_e(caption)}{label}</figcaption></figure>")
    return '<div class="sheet">' + "\n".join(items) + "</div>"


def _cell(value: object) -> str:
    """A metric table cell: numbers right-aligned (3 decimals), anything else as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{_num(float(value), 3)}</td>'
    return f"<td>{'–' if value is None else _e(value)}</td>"


def _bundle(bundle: dict) -> str:
    """Name, versions and other scalars as rows; `metrics` as a table: one row per key, with the keys of
    a dict value (e.g. {"expr": {"metric": "f1", "score": 0.41, ...}}) as columns."""
    lines = ["<table>"]
    for key, value in bundle.items():
        if key == "metrics":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>")
    lines.append("</table>")
    metrics = bundle.get("metrics") or {}
    if isinstance(metrics, dict) and metrics:
        fields = list(dict.fromkeys(k for v in metrics.values() if isinstance(v, dict) for k in v))
        fields = fields or ["value"]
        head = "".join(f"<th>{_e(f.replace('_', ' '))}</th>" for f in fields)
        lines.append(f'<p class="muted">Validated with:</p><table><tr><th>task</th>{head}</tr>')
        for name, value in metrics.items():
            row = value if isinstance(value, dict) else {fields[0]: value}
            cells = "".join(_cell(row.get(f)) for f in fields)
            lines.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
        lines.append("</table>")
    return "\n".join(lines)


def write_report(
    table: pl.DataFrame,
    summary: dict,
    out_path: Path | str,
    *,
    faces: list[tuple[int, int, np.ndarray]] | None = None,
    title: str | None = None,
) -> None:
    """Write one self-contained HTML report.

    Args:
        table: one video's prediction table (task columns may be absent; may have no rows).
        summary: `pipeline.predict.summary.summarise(table)`, optionally with `notes` (list[str]) and
            `bundle` (`Bundle.describe()`: {"name", "versions", ..., "metrics": {task: value or dict}}) added.
        out_path: the .html file to write (its folder is created).
        faces: sampled face crops for the contact sheet: (face_id, frame, RGB uint8 [H, W, 3]).
        title: the page title; default the video name.
    """
    video = summary.get("video") or "video"
    fps = summary.get("fps")
    persons = summary.get("persons", [])
    overall = summary.get("overall", {})
    any_face = any(p.get("frames_with_face") for p in persons)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title or video)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(title or video)}</h1>",
        f'<p class="facts">Video <b>{_e(video)}</b>'
        f" · {_e(_duration(summary.get('seconds'), summary.get('frames', 0)))}"
        f" · {len(persons)} {'person' if len(persons) == 1 else 'people'}"
        f" · a face on {_pct(overall.get('detection_rate'))} of the frames</p>",
    ]
    if not any_face:
        parts.append(
            '<p class="alert"><b>No usable face was found in this video.</b> '
            "There is nothing to measure: no expressions, action units or valence-arousal are shown.</p>"
        )
    if persons:
        parts += ["<h2>People</h2>", _people_table(persons)]
        parts.append(
            '<p class="muted">Detected: share of the frames where the person\'s face was found and '
            "used; filled: frames without a usable face, given the nearest usable frame's outputs. "
            "Every statistic is over the frames with the face found.</p>"
        )
    share_figure = _expression_share_figure(persons)
    if share_figure is not None:
        parts += ["<h3>Share of time per expression</h3>", _png(share_figure)]

    for person in persons:
        face_id = person["face_id"]
        swatch = f'<span class="swatch" style="background:{_person_colour(face_id)}"></span>'
        parts.append(f"<h2>{swatch}Person {_e(face_id)}</h2>")
        rows = table.filter(pl.col("face_id") == face_id).sort("frame") if table.height else table
        figure = _person_figure(rows, fps)
        if figure is None and not person.get("frames_with_face"):
            parts.append('<p class="muted">No usable face of this person on any frame: no timelines.</p>')
        elif figure is None:
            parts.append('<p class="muted">The bundle has no outputs to plot over time.</p>')
        else:
            parts.append(_png(figure))
            parts.append('<p class="muted">Grey: frames without the face found.</p>')
        if person.get("mimicry"):
            parts.append(_mimicry_table(person["mimicry"]))

    if faces:
        parts += ["<h2>Sampled faces</h2>", _contact_sheet(faces, table, fps)]
    notes = summary.get("notes", [])
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>"]
    bundle = summary.get("bundle", {})
    if bundle:
        parts += ["<h2>Model bundle</h2>", _bundle(bundle)]
    parts.append("</body></html>")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(parts), encoding="utf-8")
