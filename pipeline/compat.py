"""Make torchvision importable next to a CPU-only torch build.

Every torchvision wheel on the registry this project installs from is a CUDA build: its compiled
extension `_C.so` needs `libtorch_cuda.so`, which the CPU torch lacks, and `import torchvision` then
fails with `operator torchvision::nms does not exist`. timm imports torchvision for a few pure-Python
pieces (transforms, `FrozenBatchNorm2d`), so the whole model stack breaks.

`install_torchvision_shim` runs before the first import of torchvision. When the compiled extension
loads, it does nothing. When it does not, it defines the two operator schemas that torchvision's
import-time registrations need (`nms`, `qnms`) with a pure-torch CPU kernel, so `torchvision.ops.nms`
works too, and every other compiled op (roi_align, deform_conv, ...) stays unavailable and raises
torchvision's own error if called.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_LIBRARY: torch.library.Library | None = None  # kept alive: a collected Library unregisters its ops


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in plain torch.

    Args:
        boxes: [N, 4] boxes as (x1, y1, x2, y2).
        scores: [N] scores.
        iou_threshold: boxes overlapping a kept box by more than this IoU are dropped.

    Returns:
        [K] int64 indices of the kept boxes, in decreasing score order (torchvision's contract).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep).to(torch.int64)


def _compiled_ops_load(package_dir: str) -> bool:
    libraries = glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(
        os.path.join(package_dir, "_C*.pyd")
    )
    if not libraries:
        return False
    try:
        torch.ops.load_library(libraries[0])
    except (OSError, RuntimeError):
        return False
    return True


def install_torchvision_shim() -> bool:
    """Install the shim if torchvision's compiled ops cannot load.

    Returns:
        True if the shim is active (now or from an earlier call), False if torchvision works natively,
        is not installed, or was already imported by someone else.
    """
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    if "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    if _compiled_ops_load(os.path.dirname(spec.origin)):
        return False

    library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.impl("nms", nms_reference, "CPU")
    library.impl(
        "qnms", lambda dets, scores, thr: nms_reference(dets.dequantize(), scores.dequantize(), thr), "CPU"
    )
    _LIBRARY = library

    import torchvision.extension

    # torchvision's Python wrappers check this flag before calling torch.ops.torchvision.*
    torchvision.extension._has_ops = lambda: True
    return True
