"""Encoder registry, checkpoint helpers and strict loading of MAE-reference-format weights."""

from __future__ import annotations

import pytest
import torch

import pipeline  # noqa: F401  (torchvision shim before timm)
from pipeline.models.encoders import (
    ENCODERS,
    create_encoder,
    encoder_from_checkpoint,
    encoder_kwargs,
    feature_dim,
    import_checkpoint,
    load_checkpoint,
    load_encoder_checkpoint,
    save_checkpoint,
)


def _tiny(**overrides):
    """A 2-block vit_tiny_112 so the tests stay fast."""
    return create_encoder("vit_tiny_112", depth=2, **overrides)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_builds_and_pools(name):
    # depth=1 keeps vit_base_224 cheap; the rest of the architecture is the registry's.
    encoder = create_encoder(name, depth=1).eval()
    size = encoder.patch_embed.img_size
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, *size))
    assert out.shape == (2, feature_dim(encoder))
    assert feature_dim(encoder) == encoder_kwargs(name)["embed_dim"]


def test_unknown_encoder_is_rejected():
    with pytest.raises(KeyError, match="vit_tiny_112"):
        create_encoder("no_such_vit")


def _mae_reference_state(encoder):
    """The state dict the MAE reference saves: encoder keys in timm naming plus decoder and mask token."""
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 1, 64)
    state["decoder_embed.weight"] = torch.zeros(64, 192)
    state["decoder_pos_embed"] = torch.zeros(1, 50, 64)
    state["decoder_blocks.0.norm1.weight"] = torch.ones(64)
    state["decoder_pred.weight"] = torch.zeros(768, 64)
    return {"model": state}


def test_mae_reference_checkpoint_loads_every_encoder_weight(tmp_path):
    source = _tiny()
    path = tmp_path / "mae_pretrain.pth"
    torch.save(_mae_reference_state(source), path)
    target = load_encoder_checkpoint(_tiny(), path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_wrong_checkpoint_is_rejected():
    state = _mae_reference_state(_tiny())
    with pytest.raises(KeyError, match="blocks.1"):  # a 1-block checkpoint misses block 1
        load_encoder_checkpoint(
            _tiny(), {"model": {k: v for k, v in state["model"].items() if "blocks.1" not in k}}
        )
    state["model"]["blocks.9.attn.qkv.weight"] = torch.zeros(3)  # a deeper model's weights
    with pytest.raises(KeyError, match="blocks.9"):
        load_encoder_checkpoint(_tiny(), state)


def test_fc_norm_encoder_drops_pretraining_norm_like_mae_finetuning():
    source = _tiny()
    target = load_encoder_checkpoint(_tiny(fc_norm=True), _mae_reference_state(source))
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)


def test_position_embedding_is_resampled_for_another_grid():
    source = create_encoder("vit_tiny_112", depth=1, img_size=224)  # 14 x 14 grid
    target = load_encoder_checkpoint(create_encoder("vit_tiny_112", depth=1), {"model": source.state_dict()})
    assert target.pos_embed.shape == (1, 1 + 7 * 7, 192)
    assert torch.equal(target.pos_embed[:, 0], source.pos_embed[:, 0])  # the cls position is kept as is


def test_checkpoint_round_trip(tmp_path):
    encoder = _tiny()
    checkpoint = {
        "model": encoder.state_dict(),
        "encoder": "vit_tiny_112",
        "encoder_kwargs": encoder_kwargs("vit_tiny_112", depth=2),
        "config": {"lr": 1.0e-3, "tasks": ["expr"]},
    }
    save_checkpoint(checkpoint, tmp_path / "sub" / "ckpt.pt")
    loaded = load_checkpoint(tmp_path / "sub" / "ckpt.pt")
    rebuilt = encoder_from_checkpoint(loaded).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), encoder.eval()(x))


def test_import_external_checkpoint_to_our_format(tmp_path):
    source = _tiny()
    path = tmp_path / "mae_face.pth"
    torch.save(_mae_reference_state(source), path)
    checkpoint = import_checkpoint(path, "vit_tiny_112", depth=2)
    assert checkpoint["encoder"] == "vit_tiny_112" and checkpoint["encoder_kwargs"]["depth"] == 2
    assert not any(k.startswith(("decoder_", "mask_token")) for k in checkpoint["model"])
    rebuilt = encoder_from_checkpoint(checkpoint)
    assert torch.equal(rebuilt.pos_embed, source.pos_embed)
