"""Plot data for `dvc plots show` (CSV, cache: false) plus static PNGs for the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from pipeline.tasks.definitions import EXPR_CLASSES  # noqa: E402


def write_run_scores(rows: list[dict[str, Any]], out: Path) -> pl.DataFrame:
    """One row per (run, seed) with each task's headline score (e.g. expr_f1), for `dvc plots`."""
    table = pl.DataFrame(rows)
    table.write_csv(out)
    return table


def write_confusion(true: np.ndarray, predicted: np.ndarray, out_csv: Path, out_png: Path) -> None:
    """Rows `actual,predicted` with class names (DVC's confusion template) and a normalised heat map."""
    names = np.array(EXPR_CLASSES)
    pl.DataFrame({"actual": names[true], "predicted": names[predicted]}).write_csv(out_csv)
    counts = np.zeros((len(names), len(names)))
    np.add.at(counts, (true, predicted), 1)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual (row-normalised)")
    ax.set_title("EXPR confusion, test folds of every CV run (first seed)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_va_timeline(
    track: str, frames: np.ndarray, label: np.ndarray, predicted: np.ndarray, out_csv: Path, out_png: Path
) -> None:
    """Valence/arousal of one held-out track over time, prediction against label (valid frames only).

    frames: [N]; label, predicted: [N, 2].
    """
    pl.DataFrame(
        {
            "frame": frames,
            "valence_label": label[:, 0],
            "valence_pred": predicted[:, 0],
            "arousal_label": label[:, 1],
            "arousal_pred": predicted[:, 1],
        }
    ).write_csv(out_csv)
    fig, axes = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    for ax, i, name in zip(axes, range(2), ("valence", "arousal"), strict=True):
        ax.plot(frames, label[:, i], ".", markersize=2, label="label", color="black")
        ax.plot(frames, predicted[:, i], ".", markersize=2, label="prediction", color="tab:orange")
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(name)
    axes[0].legend(loc="upper right", markerscale=4)
    axes[0].set_title(f"{track} (held out)")
    axes[1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_absent(note: str, columns: list[str], out_csv: Path, out_png: Path) -> None:
    """Stand-in for a plot whose task has no labels: a header-only CSV and a PNG that says why, so
    `dvc repro` (which expects every declared plot) and `dvc plots show` work with any subset of tasks."""
    pl.DataFrame({name: [] for name in columns}).write_csv(out_csv)
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
