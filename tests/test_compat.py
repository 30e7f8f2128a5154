import subprocess
import sys

import torch

from pipeline import compat
from pipeline.compat import install_torchvision_shim, nms_reference


def test_timm_and_torchvision_import_after_the_shim():
    import timm
    import torchvision.ops

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, num_classes=3)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 2]


def test_nms_reference_matches_bruteforce_on_random_boxes():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=generator) * 100
    wh = torch.rand(60, 2, generator=generator) * 30 + 1
    boxes, scores = torch.cat([xy, xy + wh], 1), torch.rand(60, generator=generator)
    keep = nms_reference(boxes, scores, 0.3).tolist()
    # Brute force: a box is kept iff no higher-scoring kept box overlaps it by more than the threshold.
    order, kept = scores.argsort(descending=True).tolist(), []
    for i in order:
        ok = True
        for j in kept:
            lt = torch.maximum(boxes[i, :2], boxes[j, :2])
            rb = torch.minimum(boxes[i, 2:], boxes[j, 2:])
            inter = (rb - lt).clamp(min=0).prod()
            union = (boxes[i, 2:] - boxes[i, :2]).prod() + (boxes[j, 2:] - boxes[j, :2]).prod() - inter
            ok &= bool(inter / union <= 0.3)
        if ok:
            kept.append(i)
    assert keep == kept
    assert 0 < len(keep) < 60


def test_shim_is_idempotent():
    first = install_torchvision_shim()
    assert install_torchvision_shim() == first


def run_isolated(code: str) -> str:
    """Run code in a fresh interpreter with compat.py loaded on its own (not via `import pipeline`)."""
    prelude = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('compat', {str(compat.__file__)!r})\n"
        "compat = importlib.util.module_from_spec(spec); spec.loader.exec_module(compat)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True
    ).stdout


def test_shim_does_nothing_when_the_compiled_ops_load():
    out = run_isolated(
        "compat._compiled_ops_load = lambda package_dir: True\n"
        "print(compat.install_torchvision_shim(), compat._LIBRARY is None)\n"
    )
    assert out.split() == ["False", "True"]


def test_shim_does_nothing_when_torchvision_is_already_imported():
    out = run_isolated(
        "import sys, types\n"
        "sys.modules['torchvision'] = types.ModuleType('torchvision')\n"
        "print(compat.install_torchvision_shim(), compat._LIBRARY is None)\n"
    )
    assert out.split() == ["False", "True"]
