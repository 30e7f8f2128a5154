"""Full Aff-Wild2 sized per stage: hours and disk on this CPU machine, 1 GPU, 8 GPUs and 4 machines x 8 GPUs.

Inputs are measured throughputs only. CPU figures are those README.md reports as measured on this machine
(2 cores; each input below quotes the README text it comes from, and the script warns when that text is no
longer there). GPU figures come from `bench/results/gpu.json`, written by `python -m bench.bench_gpu` on a
lent GPU (the project path's rate of each stage); without that file every GPU-bound cell is printed as "not
measured", never estimated. The work per stage follows the seed presets at real scale (ViT-B/16 at 224 px,
presets/seed_003.yaml and seed_004.yaml, read at run time) and the data set's size (FORMATS.md: about 3.0M
annotated frames in ~600 videos); the scaling assumptions are printed with the table.

Usage: python -m bench.sizing [--gpu-json bench/results/gpu.json] [--frames 3.0e6]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a script from anywhere

DEFAULT_GPU_JSON = REPO / "bench" / "results" / "gpu.json"


@dataclass(frozen=True)
class CpuInputs:
    """Throughputs measured on this machine (2 CPU cores, one process), as README.md reports them."""

    # README "affectflow predict", speed table (python -m bench.bench_predict, 640x360): decode 0.9 ms/frame.
    decode_ms_per_frame: float = 0.9
    # README "Speed and memory" of the faces stage (python bench/bench_faces.py, 640x360): the whole per-video
    # face pipeline (decode, dlib HOG on every 4th frame = the default, tracking, landmarks, alignment,
    # views, crops written) at 69.3 frames/s.
    faces_frames_per_s: float = 69.3
    # README "What a CPU affords" (python -m bench.bench_encoders, fp32), row vit_base_224: inference 3.8
    # images/s (batch 64), MAE pretraining 4.3 (decoder 128 x 2: lighter than seed_004's 512 x 8, so this
    # under-counts the preset's cost), fine-tuning all blocks 1.3 (batch 32).
    vit_b_infer_images_per_s: float = 3.8
    vit_b_mae_images_per_s: float = 4.3
    vit_b_finetune_images_per_s: float = 1.3
    # Same bench and table, RetinaFace (the seeds' detector) on every frame: 8.7 frames/s.
    faces_retinaface_every_frame_per_s: float = 8.7
    # No seed-scale sequence-model training rate on a CPU is reported in README.md.
    temporal_sequences_per_s: float | None = None
    cores: int = 2  # README "What a CPU affords": "on this machine (2 cores, fp32; ...)"


# The README text each CPU input is read from (whitespace collapsed when compared).
README_QUOTES = {
    "decode_ms_per_frame": "| encoder batches of 128 crops | **52.5** | 0.9 | 11.0 | 0.3 | 6.3 | 0.4 | 0.1 |",
    "faces_frames_per_s": "dlib_hog      4      69.3      1.07      5.49",
    "faces_retinaface_every_frame_per_s": "retinaface    1       8.7      0.62    102.48",
    "vit_b_*": "| `vit_base_224` (the seeds') | 3.8 | 4.3 | 1.3 | 2.0 | 20 | 64 / 41 | 218 |",
    "crop_kb_112_two_views": "about 75 kB per frame and person at 112 px, two views",
    "cores": "on this machine (2 cores, fp32;",
}


@dataclass(frozen=True)
class DiskInputs:
    # README "Known limits" (affectflow predict): crops "about 75 kB per frame and person at 112 px, two
    # views" (2 x 112 x 112 x 3 bytes, raw uint8 in .npy); at the presets' 224 px the same layout is 4x that.
    crop_kb_112_two_views: float = 75.0
    # pipeline/features/cache.py: one float16 embedding (STORED_DTYPE) per frame and view; ViT-B/16 width 768.
    feature_bytes_per_view: int = 768 * 2
    # A ViT-B/16 checkpoint: 86M float32 weights (timm vit_base_patch16_224 without head).
    encoder_checkpoint_gb: float = 0.35


@dataclass(frozen=True)
class Machines:
    """The columns. Cores of GPU machines: the lent H200 machine has 16 (the device tool's description;
    gpu.json's `cpu_count` replaces it when present); an 8-GPU machine is assumed to have as many per GPU."""

    gpu_machine_cores: int = 16
    gpus_per_machine: int = 8
    machines: int = 4


@dataclass(frozen=True)
class Stage:
    name: str
    work: float  # items
    unit: str  # what an item is
    kind: str  # "cpu": decode/faces, per machine's cores | "gpu": data-parallel over GPUs
    cpu_rate: float | None  # items/s on this machine
    gpu_key: str | None  # gpu.json summary key (its "project" rate, items/s on one GPU)
    disk_gb: float | None
    detail: str
    max_parallel: int | None = None  # independent jobs (GPU stages): no speed-up beyond this many GPUs


def readme_warnings() -> list[str]:
    """Quotes no longer found in README.md (the inputs above may then be stale)."""
    path = REPO / "README.md"
    if not path.is_file():
        return ["README.md not found: CPU inputs not checked against it"]
    text = re.sub(r"\s+", " ", path.read_text())
    return [
        f"README.md no longer contains the quote for {key}: {quote!r}"
        for key, quote in README_QUOTES.items()
        if re.sub(r"\s+", " ", quote) not in text
    ]


def load_gpu(path: Path) -> tuple[dict[str, Any] | None, str]:
    """gpu.json's summary and a line saying what was read (None: no usable GPU measurement)."""
    if not path.is_file():
        return None, f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} not found"
    data = json.loads(path.read_text())
    meta = data.get("meta", {})
    if meta.get("device_type") != "cuda" or meta.get("smoke"):
        return None, f"{path} is not a GPU measurement (device_type {meta.get('device_type')!r})"
    line = (
        f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {meta.get('device')}, "
        f"torch {meta.get('torch')}, {meta.get('date')}, commit {meta.get('commit')}"
    )
    return data, line


def preset(name: str) -> Any:
    """params.yaml with presets/<name>.yaml applied (pipeline.presets), as a checked config."""
    import yaml

    from pipeline.config import config_from_dict
    from pipeline.presets import apply_preset

    with (REPO / "params.yaml").open() as f:
        return config_from_dict(apply_preset(yaml.safe_load(f), name))


def stages(
    frames: float, videos: int, cpu: CpuInputs, disk: DiskInputs
) -> tuple[list[Stage], list[Stage], dict[str, float]]:
    """The pipeline's stages at real scale (and extra rows), with the numbers they are built from."""
    s3, s4 = preset("seed_003"), preset("seed_004")
    runs = len(s4.folds.runs)  # fold_0..fold_4 + official: one encoder, feature set and temporal models each
    seeds = len(s3.train.seeds)
    train_share = 0.6  # a CV run trains on 3 of its 5 folds (assumed for official too)
    crop_kb = disk.crop_kb_112_two_views * (s4.faces.crop_size / 112) ** 2 * len(s3.faces.views) / 2
    pre, ft, tr = s4.pretrain, s4.finetune, s3.train
    mae_images = frames / pre.frame_stride * pre.epochs
    ft_images = frames / ft.frame_stride * train_share * ft.epochs * runs
    windows_per_epoch = (frames / tr.stride + videos) * train_share  # + the last window of each track
    sequences = windows_per_epoch * tr.epochs * seeds * runs
    main = [
        Stage(
            "decode (frames stage)",
            frames,
            "frames",
            "cpu",
            1000 / cpu.decode_ms_per_frame,
            None,
            None,
            "each raw video decoded once; index and label tables only (size not measured)",
        ),
        Stage(
            "faces (dlib HOG, k=4)",
            frames,
            "frames",
            "cpu",
            cpu.faces_frames_per_s,
            None,
            frames * crop_kb / 1e6,
            f"{s4.faces.crop_size}-px crops, views {'+'.join(s3.faces.views)}: {crop_kb:.0f} kB a frame",
        ),
        Stage(
            "MAE pretraining (seed_004)",
            mae_images,
            "images",
            "gpu",
            cpu.vit_b_mae_images_per_s,
            "pretrain",
            disk.encoder_checkpoint_gb,
            f"{pre.epochs} epochs x {every(pre.frame_stride)}, ViT-B/16 224, decoder "
            f"{pre.decoder_dim}x{pre.decoder_depth} (continued from MAE weights)",
        ),
        Stage(
            "fine-tuning (seed_004)",
            ft_images,
            "images",
            "gpu",
            cpu.vit_b_finetune_images_per_s,
            "finetune",
            runs * disk.encoder_checkpoint_gb,
            f"{ft.epochs} epochs x {every(ft.frame_stride)} x {train_share} train share x {runs} runs, "
            "all blocks",
        ),
        Stage(
            "feature extraction",
            frames * runs,
            "crops",
            "gpu",
            cpu.vit_b_infer_images_per_s,
            "features",
            frames * runs * disk.feature_bytes_per_view / 1e9,
            f"every frame, view face, each of {runs} runs' encoders; float16 x 768 = "
            f"{disk.feature_bytes_per_view} B a frame",
        ),
        Stage(
            "temporal training (seed_003)",
            sequences,
            "windows",
            "gpu",
            cpu.temporal_sequences_per_s,
            "temporal_tcn_transformer",
            None,
            f"{tr.model}, windows {tr.window}/{tr.stride}, {tr.epochs} epochs x {seeds} seeds x {runs} runs "
            f"x {train_share} train share",
            max_parallel=seeds,  # a run's seeds at once, one per GPU; runs one after another
        ),
    ]
    # METHODS.md: the seeds pretrain from scratch on "millions of faces" (003: 500 epochs, 004: 800 epochs);
    # the face count is not given, so 1M faces (the least "millions" can mean) is a floor, not an estimate.
    scratch = Stage(
        "MAE from scratch (seed 004 scale)",
        1.0e6 * 800,
        "images",
        "gpu",
        cpu.vit_b_mae_images_per_s,
        "pretrain",
        None,
        "800 epochs x >= 1M faces (METHODS.md: 'millions'); the presets start from released MAE weights",
    )
    retinaface = Stage(
        "faces with RetinaFace on every frame",
        frames,
        "frames",
        "cpu",
        cpu.faces_retinaface_every_frame_per_s,
        None,
        None,
        "the seeds' detector (002, 004), one frame a call on the CPU as the faces stage runs it",
    )
    numbers = {"runs": runs, "seeds": seeds, "train_share": train_share}
    return main, [retinaface, scratch], numbers


def hours(stage: Stage, column: dict, gpu: dict | None) -> float | None:
    """Hours of one stage in one column, or None when the needed rate is not measured."""
    if column["cpu_only"] or stage.kind == "cpu":
        if stage.cpu_rate is None:
            return None
        # one process per 2 cores at this machine's measured 2-core rate
        return stage.work / (stage.cpu_rate * column["cores"] / CpuInputs.cores) / 3600
    if gpu is None or stage.gpu_key is None:
        return None
    rate = gpu.get("summary", {}).get(stage.gpu_key, {}).get("project")
    if not rate:
        return None
    gpus = column["gpus"] if stage.max_parallel is None else min(column["gpus"], stage.max_parallel)
    return stage.work / (rate * gpus) / 3600


def cell(value: float | None, scaled: bool = False) -> str:
    """Hours (and days from 48 h), "not measured", and "*" on CPU-bound stages scaled to a GPU machine."""
    if value is None:
        return "not measured"
    if value < 1:
        minutes = f"{60 * value:.0f} min" if value >= 1 / 60 else "< 1 min"
        return minutes + (" *" if scaled else "")
    text = f"{value:,.1f} h" if value < 100 else f"{value:,.0f} h"
    if value >= 48:
        text += f" ({value / 24:,.0f} d)"
    return text + (" *" if scaled else "")


def every(n: int) -> str:
    """ "every 2nd frame" style wording of a frame stride."""
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n if n < 20 else n % 10, "th")
    return "every frame" if n == 1 else f"every {n}{suffix} frame"


def count(value: float) -> str:
    return f"{value / 1e6:,.1f}M" if value >= 1e6 else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-json", type=Path, default=DEFAULT_GPU_JSON)
    parser.add_argument("--frames", type=float, default=3.0e6, help="annotated frames (FORMATS.md: about 3M)")
    parser.add_argument("--videos", type=int, default=600, help="videos (FORMATS.md: ~600)")
    args = parser.parse_args(argv)

    cpu, disk, machines = CpuInputs(), DiskInputs(), Machines()
    gpu, gpu_line = load_gpu(args.gpu_json)
    if gpu is not None and gpu["meta"].get("cpu_count"):
        machines = Machines(gpu_machine_cores=int(gpu["meta"]["cpu_count"]))
    gpu_name = gpu["meta"]["device"] if gpu else "GPU"
    per_machine = machines.gpu_machine_cores * machines.gpus_per_machine
    columns = [
        {
            "title": f"1 CPU machine ({cpu.cores} cores, this one)",
            "cpu_only": True,
            "cores": cpu.cores,
            "gpus": 0,
        },
        {
            "title": f"1 {gpu_name} ({machines.gpu_machine_cores} cores)",
            "cpu_only": False,
            "cores": machines.gpu_machine_cores,
            "gpus": 1,
        },
        {
            "title": f"8 x {gpu_name} (1 machine, {per_machine} cores)",
            "cpu_only": False,
            "cores": per_machine,
            "gpus": machines.gpus_per_machine,
        },
        {
            "title": f"{machines.machines} machines x 8 {gpu_name}",
            "cpu_only": False,
            "cores": per_machine * machines.machines,
            "gpus": machines.gpus_per_machine * machines.machines,
        },
    ]
    main_stages, extra_stages, numbers = stages(args.frames, args.videos, cpu, disk)

    print(f"# Sizing full Aff-Wild2 ({count(args.frames)} annotated frames, ~{args.videos} videos)\n")
    if gpu is None:
        print(
            f'**GPU throughputs are NOT measured** ({gpu_line}): every GPU-bound cell says "not measured". '
            "Run `python -m bench.bench_gpu` on a machine with a GPU to write it.\n"
        )
    else:
        print(f"GPU throughputs measured by bench_gpu: {gpu_line}.\n")

    header = ["stage", "work", "disk"] + [c["title"] for c in columns]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    totals: list[list[float | None]] = [[] for _ in columns]
    disk_total = 0.0
    for stage in main_stages:
        values = [hours(stage, c, gpu) for c in columns]
        for total, value in zip(totals, values, strict=True):
            total.append(value)
        disk_total += stage.disk_gb or 0.0
        disk_text = "-" if stage.disk_gb is None else f"{stage.disk_gb:,.1f} GB"
        cells = [
            cell(v, not c["cpu_only"] and stage.kind == "cpu") for v, c in zip(values, columns, strict=True)
        ]
        print(
            f"| {stage.name} | {count(stage.work)} {stage.unit} | {disk_text} | " + " | ".join(cells) + " |"
        )

    total_cells, bottlenecks = [], []
    for column, values in zip(columns, totals, strict=True):
        known = [(v, s.name) for s, v in zip(main_stages, values, strict=True) if v is not None]
        missing = [s for s, v in zip(main_stages, values, strict=True) if v is None]
        total = sum(v for v, _ in known)
        text = cell(total)
        total_cells.append(f">= {text} + {len(missing)} not measured" if missing else text)
        worst, name = max(known)
        share = f"{100 * worst / total:.0f}% of the {'measured ' if missing else ''}time"
        if missing and not column["cpu_only"]:
            bottlenecks.append("unknown: GPU stages not measured")
        elif missing:
            bottlenecks.append(f"**{name}** ({share}; {', '.join(s.name for s in missing)} not measured)")
        else:
            bottlenecks.append(f"**{name}** ({share})")
    print(f"| total (stages one after another) | | {disk_total:,.0f} GB | " + " | ".join(total_cells) + " |")
    print("| bottleneck | | | " + " | ".join(bottlenecks) + " |")
    for stage in extra_stages:
        cells = [cell(hours(stage, c, gpu), not c["cpu_only"] and stage.kind == "cpu") for c in columns]
        print(f"| extra: {stage.name} | {count(stage.work)} {stage.unit} | - | " + " | ".join(cells) + " |")

    notes = [
        "",
        "\\* CPU-bound stage on a GPU machine: this machine's CPU rate scaled by cores (assumption).",
        "",
    ]
    notes += ["Stages:"] + [f"- {s.name}: {s.detail}." for s in main_stages + extra_stages]
    notes += ["", "Inputs (measured):"]
    notes.append(
        f"- CPU, README.md (this machine, {cpu.cores} cores, one process): decode "
        f"{cpu.decode_ms_per_frame} ms/frame (bench_predict); faces stage {cpu.faces_frames_per_s} "
        "frames/s (bench_faces: dlib HOG every 4th frame, decode included); ViT-B/16 224 fp32 "
        f"(bench_encoders): inference {cpu.vit_b_infer_images_per_s}, MAE {cpu.vit_b_mae_images_per_s} "
        "(decoder 128x2: under-counts seed_004's 512x8), fine-tuning all blocks "
        f"{cpu.vit_b_finetune_images_per_s} images/s; temporal training: none reported (not measured)."
    )
    if gpu is None:
        notes.append("- GPU: not measured (no bench/results/gpu.json from a GPU run).")
    for key, entry in (gpu or {}).get("summary", {}).items():
        if "project" in entry:
            util = entry.get("gpu_util_mean")
            notes.append(
                f"- GPU {key}: project path {entry['project']:,.1f} {entry['unit']} (batch "
                f"{entry.get('batch')}), model only {entry.get('model_only') or float('nan'):,.1f}, "
                f"GPU utilisation {'-' if util is None else f'{util:.0f}%'}."
            )
        elif "model_only" in entry:
            notes.append(
                f"- GPU {key}: RetinaFace network alone {entry['model_only']:,.0f} frames/s (batch "
                f"{entry.get('model_only_batch')}); the faces stage runs it on the CPU, a frame a call."
            )
    notes.append(
        f"- Disk: crops {disk.crop_kb_112_two_views} kB per frame and person at 112 px, two views "
        "(README), times (224/112)^2; features float16 x 768 = "
        f"{disk.feature_bytes_per_view} B per frame and view (pipeline/features/cache.py); raw videos and "
        "small tables not counted."
    )
    notes += ["", "Assumptions:"]
    notes.append(
        "- decode and faces are CPU-bound and run per machine: one process per 2 cores, each at the "
        "2-core rate measured here (AFFECTFLOW_WORKERS = cores / 2; its default stops at 4), so they scale "
        f"with a column's cores; a GPU machine has {machines.gpu_machine_cores} cores (the lent H200 "
        "machine), an 8-GPU machine 8 times that (assumed, not measured)."
    )
    notes.append(
        "- GPU stages scale linearly with GPUs from the one-GPU rate: pretraining and fine-tuning "
        "data-parallel under torchrun (pipeline.training.distributed; all-reduce cost ignored, several "
        "machines not tested), feature extraction split by track over the GPUs, temporal training as "
        f"{numbers['seeds']} seeds at once, one per GPU (the runs one after another): no faster beyond "
        "that many GPUs. What the pipeline parallelises today: pretraining and fine-tuning (torchrun), "
        "a run's feature shards and seeds (one per GPU) and faces (job processes, a Dask cluster or a work "
        "pool); `dvc repro` runs the per-run stages one after another (one repro per repository at a time)."
    )
    notes.append(
        f"- Each run trains on {numbers['train_share']} of the frames (a CV run's 3 of 5 folds); stages run "
        "one after another (no overlap), so a column's total is their sum and its bottleneck the largest. "
        "The CPU column runs everything on this 2-core machine."
    )
    notes += [f"- WARNING: {warning}" for warning in readme_warnings()]
    print("\n".join(notes))


if __name__ == "__main__":
    main()
