"""Foreign encoder checkpoints (MAE reference, MAE-Face, HuggingFace ViTMAE) mapped to our timm ViTs.

Each test builds a checkpoint the way the other code base saves it, by renaming the keys of a small random
timm ViT, writes it with torch.save (or safetensors) and loads it back through our loaders.
"""

from __future__ import annotations

import argparse

import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.config import CHECKPOINT_LAYOUTS
from pipeline.models.checkpoints import LAYOUTS, detect_layout, to_timm_state
from pipeline.models.encoders import (
    create_encoder,
    encoder_from_checkpoint,
    import_checkpoint,
    load_checkpoint,
    load_encoder_checkpoint,
)

# Tiny models gain nothing from two threads on the shared 2-core machine (see conftest).
pytestmark = pytest.mark.usefixtures("one_thread")

D, DEC = 192, 64  # vit_tiny embedding size; a small decoder width


def _encoder(**overrides) -> torch.nn.Module:
    """A 2-block vit_tiny_80 (5 x 5 patches), in eval mode."""
    return create_encoder("vit_tiny_80", depth=2, **overrides).eval()


def _source(**overrides) -> torch.nn.Module:
    """An encoder whose every weight differs from timm's init, so a swapped or missed tensor shows."""
    torch.manual_seed(0)
    encoder = _encoder(**overrides)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return encoder


def _state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def _mae_decoder() -> dict[str, torch.Tensor]:
    """The MAE reference decoder keys (MaskedAutoencoderViT), one decoder block."""
    return {
        "mask_token": torch.zeros(1, 1, DEC),
        "decoder_embed.weight": torch.randn(DEC, D),
        "decoder_embed.bias": torch.zeros(DEC),
        "decoder_pos_embed": torch.zeros(1, 26, DEC),
        "decoder_blocks.0.norm1.weight": torch.ones(DEC),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(3 * DEC, DEC),
        "decoder_norm.weight": torch.ones(DEC),
        "decoder_pred.weight": torch.randn(16 * 16 * 3, DEC),
        "decoder_pred.bias": torch.zeros(16 * 16 * 3),
    }


def mae_reference(encoder: torch.nn.Module, ddp: bool = False) -> dict:
    """What MAE reference `main_pretrain.py` saves (misc.save_model), optionally from a DDP-wrapped model."""
    state = _state(encoder) | _mae_decoder()
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1.5e-4, betas=(0.9, 0.95))
    return {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "args": argparse.Namespace(model="mae_vit_tiny", mask_ratio=0.75, norm_pix_loss=True, epochs=4),
    }


def mae_finetuned(encoder: torch.nn.Module) -> dict:
    """What MAE reference `main_finetune.py` with global pooling saves: `fc_norm` + `head`, no `norm`."""
    state = _state(encoder) | {"head.weight": torch.randn(7, D), "head.bias": torch.zeros(7)}
    return {"model": state, "epoch": 9, "args": argparse.Namespace(global_pool=True, nb_classes=7)}


def mae_face(encoder: torch.nn.Module) -> dict:
    """MAE-Face's released `mae_face_pretrain_vit_base.pth`: `{"model": state}`, decoder keys included."""
    return {"model": _state(encoder) | _mae_decoder()}


def vitmae_hf(encoder: torch.nn.Module, pretraining: bool = True) -> dict[str, torch.Tensor]:
    """HuggingFace `ViTMAEForPreTraining` (`vit.` + `decoder.`) or `ViTMAEModel` state dict, written out
    by hand from transformers' modeling_vit_mae.py names (independent of the code under test)."""
    timm = _state(encoder)
    hf = {
        "embeddings.cls_token": timm["cls_token"],
        "embeddings.position_embeddings": timm["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": timm["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": timm["patch_embed.proj.bias"],
        "layernorm.weight": timm["norm.weight"],
        "layernorm.bias": timm["norm.bias"],
    }
    renames = {
        "norm1": "layernorm_before",
        "attn.proj": "attention.output.dense",
        "norm2": "layernorm_after",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    for i in range(len(encoder.blocks)):
        for param in ("weight", "bias"):
            for ours, theirs in renames.items():
                hf[f"encoder.layer.{i}.{theirs}.{param}"] = timm[f"blocks.{i}.{ours}.{param}"]
            q, k, v = timm[f"blocks.{i}.attn.qkv.{param}"].chunk(3, dim=0)
            for name, part in (("query", q), ("key", k), ("value", v)):
                hf[f"encoder.layer.{i}.attention.attention.{name}.{param}"] = part.clone()
    if not pretraining:
        return hf
    decoder = {
        "decoder.mask_token": torch.zeros(1, 1, DEC),
        "decoder.decoder_pos_embed": torch.zeros(1, 26, DEC),
        "decoder.decoder_embed.weight": torch.randn(DEC, D),
        "decoder.decoder_layers.0.attention.attention.query.weight": torch.randn(DEC, DEC),
        "decoder.decoder_layers.0.layernorm_before.weight": torch.ones(DEC),
        "decoder.decoder_norm.weight": torch.ones(DEC),
        "decoder.decoder_pred.weight": torch.randn(16 * 16 * 3, DEC),
    }
    return {f"vit.{k}": v for k, v in hf.items()} | decoder


BUILDERS = {
    # name: (checkpoint builder, layout detect_layout should find)
    "mae_reference": (mae_reference, "timm"),
    "mae_reference_ddp": (lambda e: mae_reference(e, ddp=True), "timm"),
    "mae_face": (mae_face, "timm"),  # same names as the MAE reference: detected as its twin "timm"
    "vitmae_hf_pretraining": (vitmae_hf, "vitmae_hf"),
    "vitmae_hf_model": (lambda e: vitmae_hf(e, pretraining=False), "vitmae_hf"),
}


def _assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 80) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_layouts_match_the_config_choices():
    assert set(LAYOUTS) | {"auto"} == set(CHECKPOINT_LAYOUTS)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_round_trip_gives_identical_outputs(kind, tmp_path):
    build, layout = BUILDERS[kind]
    source = _source()
    path = tmp_path / f"{kind}.pth"
    torch.save(build(source), path)
    assert detect_layout(load_checkpoint(path)) == layout
    _assert_same_outputs(load_encoder_checkpoint(_encoder(), path), source)


@pytest.mark.parametrize("kind, layout", [("mae_face", "mae_face"), ("mae_reference", "timm")])
def test_forced_layout_loads(kind, layout):
    source = _source()
    checkpoint = BUILDERS[kind][0](source)
    _assert_same_outputs(load_encoder_checkpoint(_encoder(), checkpoint, layout=layout), source)


def test_vitmae_hf_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    source = _source()
    path = tmp_path / "model.safetensors"
    save_file(vitmae_hf(source, pretraining=False), path)
    _assert_same_outputs(load_encoder_checkpoint(_encoder(), path, layout="vitmae_hf"), source)


def test_vitmae_hf_qkv_is_concatenated_in_query_key_value_order():
    source = _source()
    state = to_timm_state(vitmae_hf(source), layout="vitmae_hf")
    assert torch.equal(state["blocks.1.attn.qkv.weight"], source.blocks[1].attn.qkv.weight)
    assert torch.equal(state["blocks.0.attn.qkv.bias"], source.blocks[0].attn.qkv.bias)
    assert not any(k.startswith(("decoder", "vit.", "mask_token")) for k in state)


def test_mae_finetuned_checkpoint_needs_an_fc_norm_encoder(tmp_path):
    source = _source(fc_norm=True)
    path = tmp_path / "checkpoint-best.pth"
    torch.save(mae_finetuned(source), path)
    _assert_same_outputs(load_encoder_checkpoint(_encoder(fc_norm=True), path), source)
    with pytest.raises(KeyError, match=r"fc_norm=True"):
        load_encoder_checkpoint(_encoder(), path)


def test_fc_norm_encoder_drops_the_pretraining_norm_like_mae_finetuning():
    source = _source()
    target = load_encoder_checkpoint(_encoder(fc_norm=True), vitmae_hf(source))
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert torch.equal(target.fc_norm.weight, torch.ones(D))  # fresh, not the pretraining norm


@pytest.mark.parametrize("kind", ["mae_reference", "vitmae_hf_pretraining"])
def test_position_embedding_is_resampled_to_another_input_size(kind):
    source = _source()  # 80 px: 5 x 5 patches
    target = load_encoder_checkpoint(_encoder(img_size=112), BUILDERS[kind][0](source))  # 7 x 7
    assert target.pos_embed.shape == (1, 1 + 7 * 7, D)
    assert torch.equal(target.pos_embed[:, 0], source.pos_embed[:, 0])  # the cls position is kept as is
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    with torch.no_grad():
        assert target(torch.randn(2, 3, 112, 112)).shape == (2, D)


def test_import_checkpoint_resamples_and_rebuilds(tmp_path):
    source = _source()
    path = tmp_path / "pytorch_model.bin"
    torch.save(vitmae_hf(source), path)
    checkpoint = import_checkpoint(path, "vit_tiny_80", layout="vitmae_hf", depth=2)
    assert checkpoint["encoder"] == "vit_tiny_80" and checkpoint["encoder_kwargs"]["depth"] == 2
    assert set(checkpoint["model"]) == set(_encoder().state_dict())
    _assert_same_outputs(encoder_from_checkpoint(checkpoint), source)
    bigger = import_checkpoint(path, "vit_tiny_80", depth=2, img_size=112)
    assert encoder_from_checkpoint(bigger).pos_embed.shape == (1, 50, D)


@pytest.mark.parametrize("kind", ["mae_reference", "vitmae_hf_pretraining"])
def test_wrong_architecture_names_missing_and_unexpected_keys(kind):
    checkpoint = BUILDERS[kind][0](_source())  # 2 blocks
    with pytest.raises(KeyError, match=r"missing keys: blocks\.2\.attn\.proj\.bias.*\(2 more\)"):
        load_encoder_checkpoint(create_encoder("vit_tiny_80", depth=3), checkpoint)
    with pytest.raises(KeyError, match=r"0 missing keys: -; 12 unexpected keys: blocks\.1\."):
        load_encoder_checkpoint(create_encoder("vit_tiny_80", depth=1), checkpoint)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.proj\.bias \(192,\) vs \(384,\)"):
        load_encoder_checkpoint(create_encoder("vit_small_112", depth=2, img_size=80), checkpoint)


def test_unknown_keys_are_errors_never_ignored():
    checkpoint = mae_reference(_source())
    checkpoint["model"]["projector.weight"] = torch.zeros(3)  # not ViT, not decoder: which layout?
    with pytest.raises(KeyError, match=r"'timm': projector\.weight"):
        load_encoder_checkpoint(_encoder(), checkpoint)

    inside = mae_reference(_source())
    inside["model"]["blocks.0.attn.rope.weight"] = torch.zeros(3)  # a timm name, not in our blocks
    with pytest.raises(KeyError, match=r"unexpected keys: blocks\.0\.attn\.rope\.weight"):
        load_encoder_checkpoint(_encoder(), inside)

    hf = vitmae_hf(_source())
    hf["vit.encoder.layer.0.attention.attention.rotary.weight"] = torch.zeros(3)
    hf["vit.pooler.dense.weight"] = torch.zeros(3)
    with pytest.raises(KeyError, match=r"2 checkpoint keys .* 'vitmae_hf': vit\.encoder\.layer\.0\..*pooler"):
        to_timm_state(hf)


def test_vitmae_hf_missing_part_of_qkv_is_an_error():
    hf = vitmae_hf(_source())
    del hf["vit.encoder.layer.1.attention.attention.key.bias"]
    with pytest.raises(KeyError, match=r"layer 1 has no attention\.attention\.key\.bias"):
        to_timm_state(hf)


def test_detection_errors_name_some_keys():
    with pytest.raises(KeyError, match=r"no known ViT encoder key.*fc\.weight"):
        detect_layout({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)})
    mixed = _state(_source()) | vitmae_hf(_source())
    with pytest.raises(KeyError, match=r"keys of several layouts"):
        detect_layout(mixed)
    with pytest.raises(TypeError, match=r"epoch"):
        detect_layout({"epoch": 3, "args": None})  # a checkpoint without its weights


def test_wrongly_forced_layout_errors_clearly():
    with pytest.raises(KeyError, match=r"layout 'timm'.*look like layout 'vitmae_hf'"):
        load_encoder_checkpoint(_encoder(), vitmae_hf(_source()), layout="timm")
    with pytest.raises(KeyError, match=r"layout 'vitmae_hf': blocks\.0\..*look like layout 'timm'"):
        to_timm_state(mae_face(_source()), layout="vitmae_hf")
    with pytest.raises(ValueError, match=r"unknown checkpoint layout 'hf'.*vitmae_hf"):
        to_timm_state(mae_face(_source()), layout="hf")
