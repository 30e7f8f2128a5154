"""VGGish (AudioSet's audio CNN) from torchvggish's real architecture, with weights from a local file.

torchvggish's `vggish()` and `Postprocessor()` download their weights on first use; the pipeline's machines
have no internet, so neither is called here. `load_vggish` builds the same network
(`torchvggish.torchvggish._vgg(postprocess=False)`: 4 conv blocks 64-128-256x2-512x2 with max pooling on a
[1, 96, 64] log-mel example, then 512*4*6 -> 4096 -> 4096 -> 128 with ReLUs) and loads a state dict from
`audio.vggish_weights` (params.yaml). The optional PCA file gives AudioSet's released embedding form:
PCA with whitening, clipped to [-2, 2] and quantised to 256 levels (values 0..255, stored as floats).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.audio.logmel import EXAMPLE_FRAMES, N_BANDS, params, torchvggish_module

EMBEDDING_DIM: int = params.EMBEDDING_SIZE  # 128
WEIGHTS_FILE = "vggish-10086976.pth"  # torchvggish's release asset
PCA_FILE = "vggish_pca_params-970ea276.pth"
WEIGHTS_KEY = "audio.vggish_weights"  # the params.yaml keys that point at the files
PCA_KEY = "audio.vggish_pca"


def _weights_missing(path: Path | str | None) -> FileNotFoundError:
    return FileNotFoundError(
        f"VGGish weights not found: {WEIGHTS_KEY} is {str(path) if path else 'empty'!r}. It must name a "
        f"local copy of torchvggish's {WEIGHTS_FILE} (the AudioSet VGGish release converted to PyTorch, "
        "from https://github.com/harritaylor/torchvggish/releases/tag/v0.1); nothing is downloaded at run "
        f"time. Set {WEIGHTS_KEY} in params.yaml to that file, or use the audio features 'logmel_stats', "
        "which need no weights."
    )


def vggish_network() -> nn.Module:
    """torchvggish's VGG with fresh (random) weights and no post-processing, in eval mode."""
    tv = torchvggish_module("torchvggish")
    return tv.VGG(tv.make_layers(), postprocess=False).eval()


def _torch_load(path: Path) -> object:
    """torch.load without running arbitrary pickled code (weights_only), allowing numpy arrays: the PCA
    parameters may be stored as numpy arrays, pickled by numpy 1 (numpy.core) or 2 (numpy._core)."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array unpickling function
    allowed = [
        np.ndarray,
        np.dtype,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        *{type(np.dtype(kind)) for kind in ("f4", "f8", "f2", "i4", "i8")},
    ]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt file; one wrapped under "state_dict" or "model" is unwrapped."""
    try:
        loaded = _torch_load(path)
    except Exception as error:  # a corrupt zip, a pickle with code in it, ...: say which file
        raise ValueError(f"{path}: cannot read it as a PyTorch state dict ({error})") from error
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path}: expected a state dict (names -> tensors), got {type(loaded).__name__}")
    return loaded


def check_state_dict(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise ValueError naming every unknown, missing or mis-shaped key (torchvggish's key naming:
    features.0.weight, ..., embeddings.4.bias)."""
    expected = model.state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    shapes = [
        f"{key} {list(state[key].shape)} (expected {list(value.shape)})"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = []
    if unknown:
        problems.append(f"unknown key(s) {unknown}")
    if missing:
        problems.append(f"missing key(s) {missing}")
    if shapes:
        problems.append(f"wrong shape(s): {', '.join(shapes)}")
    if problems:
        raise ValueError(
            f"{path}: not a VGGish state dict in torchvggish's key naming ({WEIGHTS_FILE}): "
            + "; ".join(problems)
        )


def load_vggish(weights_path: Path | str | None, pca_path: Path | str | None = None) -> nn.Module:
    """torchvggish's VGGish in eval mode with weights from `weights_path`.

    Args:
        weights_path: a state dict in torchvggish's key naming (`WEIGHTS_FILE`), possibly wrapped under
            "state_dict" or "model".
        pca_path: optional AudioSet PCA parameters (`pca_eigen_vectors` [128, 128], `pca_means` [128]) as
            torchvggish's `PCA_FILE` or the TF release's vggish_pca_params.npz. With it the model outputs
            the released form (PCA + whitening, clipped, quantised to 0..255), through torchvggish's own
            `Postprocessor.postprocess`.

    Raises:
        FileNotFoundError: `weights_path` (or `pca_path`) is empty or not a file; nothing is downloaded.
        ValueError: unreadable file, unknown / missing / mis-shaped keys (all named).
    """
    if not weights_path or not Path(weights_path).is_file():
        raise _weights_missing(weights_path)
    path = Path(weights_path)
    model = vggish_network()
    state = load_state_dict_file(path)
    check_state_dict(state, model, path)
    model.load_state_dict(state)
    if pca_path:
        attach_pca(model, *load_pca(pca_path))
    return model


def load_pca(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """AudioSet's PCA parameters: (eigen_vectors [128, 128], means [128]) float32, from a .pth
    (torchvggish) or .npz (TF release) holding `pca_eigen_vectors` and `pca_means`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VGGish PCA parameters not found: {PCA_KEY} is {str(path)!r}; it must name a local copy of "
            f"torchvggish's {PCA_FILE} (or the TF release's vggish_pca_params.npz), or be empty for raw "
            "embeddings. Nothing is downloaded at run time."
        )
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                loaded = {key: data[key] for key in data.files}
        else:
            loaded = _torch_load(path)
    except Exception as error:
        raise ValueError(f"{path}: cannot read VGGish PCA parameters ({error})") from error
    names = (params.PCA_EIGEN_VECTORS_NAME, params.PCA_MEANS_NAME)
    if not isinstance(loaded, dict) or any(name not in loaded for name in names):
        found = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
        raise ValueError(f"{path}: VGGish PCA parameters need keys {list(names)}, got {found}")
    vectors = np.asarray(loaded[names[0]], dtype=np.float32)
    means = np.asarray(loaded[names[1]], dtype=np.float32).reshape(-1)
    if vectors.shape != (EMBEDDING_DIM, EMBEDDING_DIM) or means.shape != (EMBEDDING_DIM,):
        raise ValueError(
            f"{path}: {names[0]} must be [{EMBEDDING_DIM}, {EMBEDDING_DIM}] and {names[1]} "
            f"[{EMBEDDING_DIM}], got {list(vectors.shape)} and {list(means.shape)}"
        )
    return vectors, means


def attach_pca(model: nn.Module, vectors: np.ndarray, means: np.ndarray) -> None:
    """Make `model` post-process its embeddings with torchvggish's `Postprocessor`, built without its
    `__init__` (which downloads the parameters): the same attributes, set from the arrays given.
    Its tensors are not module buffers, so `vggish_embed` moves them to the model's device."""
    tv = torchvggish_module("torchvggish")
    post = tv.Postprocessor.__new__(tv.Postprocessor)
    post._pca_matrix = torch.as_tensor(vectors).float()
    post._pca_means = torch.as_tensor(means.reshape(-1, 1)).float()
    model.pproc = post
    model.postprocess = True


@torch.no_grad()
def vggish_embed(model: nn.Module, examples: np.ndarray | torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Embed VGGish examples.

    Args:
        model: from `load_vggish`.
        examples: [E, 1, 96, 64] log-mel examples (`pipeline.audio.logmel.vggish_examples`).
        batch_size: examples per forward pass (one pass is ~0.9 GMAC per example).

    Returns:
        [E, 128] float32: the 128-d embedding (after the final ReLU), or with PCA the quantised 0..255 form.
    """
    examples = torch.as_tensor(np.asarray(examples), dtype=torch.float32)
    if examples.ndim != 4 or tuple(examples.shape[1:]) != (1, EXAMPLE_FRAMES, N_BANDS):
        raise ValueError(f"examples must be [E, 1, {EXAMPLE_FRAMES}, {N_BANDS}], got {list(examples.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    post = getattr(model, "pproc", None) if getattr(model, "postprocess", False) else None
    if post is not None and post._pca_matrix.device != device:  # plain tensors: .to(device) skips them
        post._pca_matrix, post._pca_means = post._pca_matrix.to(device), post._pca_means.to(device)
    outputs = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size].to(device)
        out = model(batch).float().cpu()
        outputs.append(out.reshape(-1, EMBEDDING_DIM))  # torchvggish's postprocess squeezes a batch of 1
    if not outputs:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return torch.cat(outputs).numpy()
