"""View fusion (seed 000) and the multimodal transformer (seed 004): shapes for every fusion and entry, `sum`
exactly as before fusion existed, checkpoints, padding, the skip connection, gradients, errors, and a tiny
learning check on an interaction of the two views."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.fusion import FUSIONS, AttentionFusion, SumFusion, create_fusion
from pipeline.models.sequence import (
    SEQUENCE_MODELS,
    InputSpec,
    create_sequence_model,
    model_checkpoint,
    model_from_checkpoint,
)
from pipeline.tasks.definitions import TASKS, get_tasks

pytestmark = pytest.mark.usefixtures("one_thread")

ATTENTION = [name for name in FUSIONS if name != "sum"]
TASK_LIST = get_tasks(["expr", "va", "emi"])  # frame classification, frame regression, video-level
SMALL = {"hidden": 16, "tcn_levels": 1, "kernel_size": 3, "transformer_layers": 1, "heads": 2, "dropout": 0.1}
# Visual views with an audio frame stream between them (input order matters for `sum`) and a clip vector.
INPUTS = [
    InputSpec("audio", 5, "frame", "audio"),
    InputSpec("eye_mouth", 4),
    InputSpec("face", 6),
    InputSpec("text", 3, "clip", "text"),
]


def batch(b: int = 2, t: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "audio": torch.randn(b, t, 5, generator=g),
        "eye_mouth": torch.randn(b, t, 4, generator=g),
        "face": torch.randn(b, t, 6, generator=g),
        "text": torch.randn(b, 3, generator=g),
    }


def build(name: str, fusion: str, inputs=INPUTS, tasks=TASK_LIST, **kwargs):
    torch.manual_seed(0)
    model = create_sequence_model(name, inputs, tasks, **(SMALL | {"fusion": fusion} | kwargs))
    for i, spec in enumerate(inputs):  # non-trivial standardisation, so checkpoints must carry it
        model.set_normalization(spec.name, torch.full((spec.dim,), 0.1 * i), torch.full((spec.dim,), 1.0 + i))
    return model.eval()


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_every_fusion_in_every_entry_gives_the_task_shapes(name, fusion):
    model = build(name, fusion, fusion_skip="face")
    x = batch()
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    with torch.no_grad():
        h = model.forward_features(x, pad, {"face": torch.rand(2, 9) > 0.2})
        out = model.forward_head(h, pad)
    assert h.shape == (2, 9, SMALL["hidden"])
    assert out["expr"].shape == (2, 9, 8) and out["va"].shape == (2, 9, 2) and out["emi"].shape == (2, 6)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert isinstance(model.embed.fusion, SumFusion if fusion == "sum" else AttentionFusion)


@pytest.mark.parametrize("fusion", ATTENTION)
@pytest.mark.parametrize("n_views", [2, 3])
def test_attention_fusion_maps_views_to_one_stream(fusion, n_views):
    module = create_fusion(fusion, 8, n_views, heads=2).eval()
    views = torch.randn(3, 7, n_views, 8)
    assert module(views).shape == (3, 7, 8)
    assert module.attention_weights(views).shape == (3, 7, 2, n_views, n_views)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_one_view_is_not_fused(fusion):
    module = create_fusion(fusion, 8, 1)
    views = torch.randn(2, 5, 1, 8)
    assert isinstance(module, SumFusion) and torch.equal(module(views), views[:, :, 0])
    # So a single-view ablation keeps the same model_kwargs and is exactly the plain model.
    one_view = [InputSpec("face", 6)]
    fused, plain = build("tcn_transformer", fusion, one_view), build("tcn_transformer", "sum", one_view)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    x = {"face": torch.randn(2, 9, 6)}
    with torch.no_grad():
        assert torch.equal(fused(x)["expr"], plain(x)["expr"])


class OldInputEmbedding(nn.Module):
    """`InputEmbedding` as it was before fusion existed (verbatim but for the docstring): the reference
    that `fusion: sum` must reproduce bit for bit, with the same state-dict keys."""

    def __init__(self, inputs: Sequence[InputSpec], hidden: int, dropout: float) -> None:
        super().__init__()
        self.specs = list(inputs)
        self.proj = nn.ModuleDict({spec.name: nn.Linear(spec.dim, hidden) for spec in self.specs})
        self.missing = nn.ParameterDict(
            {spec.name: nn.Parameter(torch.zeros(hidden)) for spec in self.specs if spec.per == "frame"}
        )
        for spec in self.specs:
            self.register_buffer(f"{spec.name}_mean", torch.zeros(spec.dim))
            self.register_buffer(f"{spec.name}_std", torch.ones(spec.dim))
        self.drop = nn.Dropout(dropout)

    def standardize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        pad_mask: torch.Tensor | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        h = None
        for spec in self.specs:
            x = self.proj[spec.name](self.standardize(spec.name, inputs[spec.name].float()))
            if spec.per == "clip":
                x = x[:, None, :]
            elif masks is not None and spec.name in masks:
                x = torch.where(masks[spec.name][..., None], x, self.missing[spec.name].to(x.dtype))
            h = x if h is None else h + x
        frames = next(inputs[s.name] for s in self.specs if s.per == "frame")
        h = self.drop(h.expand(frames.shape[0], frames.shape[1], -1))
        if pad_mask is not None:
            h = h.masked_fill(pad_mask[..., None], 0.0)
        return h


@pytest.mark.parametrize("name", ["tcn_transformer", "tcn", "transformer", "mlp"])
def test_sum_is_exactly_the_model_before_fusion(name):
    new = build(name, "sum")
    old = copy.deepcopy(new)
    old.embed = OldInputEmbedding(INPUTS, SMALL["hidden"], SMALL["dropout"])
    # An old checkpoint loads strictly into the new model and the other way round ...
    old.load_state_dict(new.state_dict(), strict=True)
    assert old.state_dict().keys() == new.state_dict().keys()
    new.load_state_dict(old.state_dict(), strict=True)
    # ... and gives the same outputs, bit for bit (padding and a face mask included).
    x, pad = batch(), torch.zeros(2, 9, dtype=torch.bool)
    pad[0, 7:] = True
    masks = {"face": torch.rand(2, 9) > 0.3}
    with torch.no_grad():
        a, b = new(x, pad, masks), old.eval()(x, pad, masks)
    for task in TASK_LIST:
        assert torch.equal(a[task.name], b[task.name]), task.name


def test_a_checkpoint_written_before_modality_existed_still_loads():
    model = build("tcn_transformer", "sum")
    checkpoint = model_checkpoint(model, "tcn_transformer", SMALL, {})
    for spec in checkpoint["inputs"]:
        del spec["modality"]  # what an old checkpoint holds
    checkpoint["inputs"] = [s for s in checkpoint["inputs"] if s["name"] != "audio"]  # (all visual then)
    checkpoint["model"] = {k: v for k, v in checkpoint["model"].items() if "audio" not in k}
    rebuilt = model_from_checkpoint(checkpoint)
    assert [spec.modality for spec in rebuilt.inputs] == ["visual", "visual", "visual"]


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_checkpoint_round_trip_gives_identical_outputs(name, fusion):
    kwargs = SMALL | {"fusion": fusion, "fusion_skip": "face", "fusion_heads": 4}
    model = build(name, fusion, fusion_skip="face", fusion_heads=4)
    rebuilt = model_from_checkpoint(model_checkpoint(model, name, kwargs, {"window": 9}))
    x = batch(seed=1)
    with torch.no_grad():
        for task, value in model(x).items():
            assert torch.equal(rebuilt(x)[task], value), task


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("name", ["mlp", "tcn_transformer", "multimodal_transformer"])
def test_padding_does_not_change_the_real_frames(name, fusion):
    model = build(name, fusion)
    x = batch(b=1, t=12, seed=2)
    padded = {
        k: torch.cat([v, 100 * torch.randn(1, 5, v.shape[2])], dim=1) if v.ndim == 3 else v
        for k, v in x.items()
    }
    pad = torch.zeros(1, 17, dtype=torch.bool)
    pad[:, 12:] = True
    face = torch.rand(1, 12) > 0.2
    with torch.no_grad():
        plain = model(x, None, {"face": face})
        masked = model(padded, pad, {"face": torch.cat([face, torch.rand(1, 5) > 0.5], dim=1)})
    for task in TASK_LIST:
        valid = masked[task.name][:, :12] if task.level == "frame" else masked[task.name]
        assert torch.allclose(valid, plain[task.name], atol=1e-5), task.name


@pytest.mark.parametrize("fusion", ATTENTION)
@pytest.mark.parametrize("skip_index", [0, 1])
def test_with_the_attention_silenced_the_output_is_the_skip_view(fusion, skip_index):
    module = create_fusion(fusion, 8, 2, heads=2, skip_index=skip_index).eval()
    nn.init.zeros_(module.proj.weight)
    nn.init.zeros_(module.proj.bias)
    views = torch.randn(2, 6, 2, 8)
    out = module(views)
    assert torch.equal(out, views[:, :, skip_index])
    assert not torch.allclose(out, views[:, :, 1 - skip_index])


@pytest.mark.parametrize("skip, expected", [("", "eye_mouth"), ("face", "face"), ("eye_mouth", "eye_mouth")])
def test_fusion_skip_names_the_view_the_model_keeps(skip, expected):
    model = build("mlp", "concat", fusion_skip=skip)
    nn.init.zeros_(model.embed.fusion.proj.weight)
    nn.init.zeros_(model.embed.fusion.proj.bias)
    x = batch()
    with torch.no_grad():
        h = model.embed(x)
        e = model.embed
        other = e.project("audio", x["audio"]) + e.project("text", x["text"])[:, None]
        assert torch.allclose(h, e.project(expected, x[expected]) + other, atol=1e-6)


def test_local_attention_lets_neighbouring_frames_inform_the_fusion():
    model = build("mlp", "concat")
    x, y = batch(b=1, t=12), batch(b=1, t=12)
    y["face"][0, 6] += 5.0
    with torch.no_grad():
        a, b = model(x)["expr"][0], model(y)["expr"][0]
    assert not torch.allclose(a[5], b[5])  # the neighbour, through the temporal convolution
    assert torch.equal(a[2], b[2])  # a per-frame model elsewhere: the kernel is 3 frames wide


@pytest.mark.parametrize("fusion", ATTENTION)
def test_gradient_reaches_both_views_and_the_key_generator(fusion):
    model = build("tcn_transformer", fusion).train()
    x = {k: v.requires_grad_() for k, v in batch().items()}
    out = model(x)
    sum(v.square().mean() for v in out.values()).backward()
    assert x["face"].grad.abs().sum() > 0 and x["eye_mouth"].grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.embed.fusion.key.parameters())


def test_the_multimodal_transformer_reads_clip_tokens_and_audio_frames():
    model = build("multimodal_transformer", "concat")
    assert model.token_type.shape == (2, SMALL["hidden"])  # frame tokens + the one clip-level input
    x = batch()
    with torch.no_grad():
        base = model(x)["expr"]
        for name in ("text", "audio"):
            changed = dict(x)
            changed[name] = x[name] + 3.0
            assert not torch.allclose(model(changed)["expr"], base), name


def test_unknown_fusion_and_bad_skip_are_clear_errors():
    with pytest.raises(KeyError, match="known: sum, mean, concat, updown_mean, updown_concat"):
        create_sequence_model("mlp", INPUTS, TASK_LIST, fusion="gated")
    with pytest.raises(KeyError, match="updown_concat"):
        create_fusion("attention", 8, 2)
    for skip in ("audio", "text"):  # a model input, but not a per-frame visual one
        with pytest.raises(ValueError, match="not a per-frame visual input"):
            create_sequence_model("tcn_transformer", INPUTS, TASK_LIST, fusion="concat", fusion_skip=skip)
    with pytest.raises(ValueError, match="not a model input"):
        create_sequence_model("mlp", INPUTS, TASK_LIST, fusion="mean", fusion_skip="nose")
    with pytest.raises(ValueError, match="modality"):
        InputSpec("video", 4, modality="video")
    with pytest.raises(ValueError, match="divisible"):
        create_sequence_model("mlp", INPUTS, TASK_LIST, hidden=16, fusion="mean", fusion_heads=3)
    with pytest.raises(ValueError, match="transformer_layers"):
        create_sequence_model("multimodal_transformer", INPUTS, TASK_LIST, transformer_layers=0)


def xor_views(n: int, t: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Label = bit_a XOR bit_b; bit_a shows only in `face`, bit_b only in `eye_mouth`: neither view alone,
    nor any sum of per-view evidence, says anything about it."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, t, 2), generator=g)
    face = torch.cat([bits[..., :1] * 2.0 - 1, torch.randn(n, t, 3, generator=g)], dim=-1)
    eye_mouth = torch.cat([bits[..., 1:] * 2.0 - 1, torch.randn(n, t, 3, generator=g)], dim=-1)
    return {"face": face, "eye_mouth": eye_mouth}, bits[..., 0] ^ bits[..., 1]


def test_an_attention_fusion_model_learns_an_interaction_of_the_views():
    torch.manual_seed(0)
    inputs = [InputSpec("eye_mouth", 4), InputSpec("face", 4)]
    model = create_sequence_model(
        "mlp", inputs, [TASKS["expr"]], hidden=16, heads=2, dropout=0.0, fusion="concat", fusion_skip="face"
    )
    x, y = xor_views(64, 8, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x)["expr"].flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_x, test_y = xor_views(32, 8, seed=1)
    with torch.no_grad():
        logits = model.eval()(test_x)["expr"].flatten(0, 1)
    test_loss = F.cross_entropy(logits, test_y.flatten()).item()
    assert test_loss < 0.5 * math.log(2)  # chance on the two classes is log 2
    assert (logits.argmax(dim=1) == test_y.flatten()).float().mean() > 0.9
