"""Windowing of tracks, padded window batches and per-frame predictions with overlap averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.features.sequences import TrackSequence
from pipeline.inference.sequences import predict_sequence, window_inputs, windows
from pipeline.tasks.definitions import TASKS

ALL_TASKS = list(TASKS.values())


@pytest.mark.parametrize(
    ("n", "window", "stride"),
    [(1, 5, 2), (5, 5, 2), (7, 5, 2), (20, 6, 4), (300, 300, 200), (1001, 300, 200)],
)
def test_windows_cover_every_frame(n, window, stride):
    spans = windows(n, window, stride)
    covered = np.zeros(n, dtype=int)
    for start, end in spans:
        assert 0 <= start < end <= n
        assert end - start == min(window, n)
        covered[start:end] += 1
    assert covered.min() >= 1
    assert spans[-1][1] == n and spans[0][0] == 0


def test_windows_reject_gaps_and_handle_empty():
    assert windows(0, 5, 2) == []
    with pytest.raises(ValueError):
        windows(10, 4, 5)
    with pytest.raises(ValueError):
        windows(10, 4, 0)


def test_window_inputs_pad_and_mask():
    sequences = [
        TrackSequence(
            "a",
            {"face": np.arange(10, dtype=np.float32)[:, None].repeat(3, 1)},
            masks={"face": np.arange(10) % 2 == 0},
            clips={"text": np.ones(4, np.float32)},
        ),
    ]
    inputs, pad_mask, masks = window_inputs(sequences, [(0, 2, 8), (0, 6, 10)])
    assert inputs["face"].shape == (2, 6, 3) and inputs["text"].shape == (2, 4)
    assert pad_mask[0].tolist() == [False] * 6 and pad_mask[1].tolist() == [False] * 4 + [True] * 2
    assert torch.equal(inputs["face"][1, :4, 0], torch.tensor([6.0, 7.0, 8.0, 9.0]))
    assert not inputs["face"][1, 4:].any()  # zeros on padding
    assert masks["face"][0].tolist() == [True, False] * 3 and not masks["face"][1, 4:].any()


class ConstantModel(nn.Module):
    """Predicts fixed logits/values everywhere: averaging must give back exactly their activations."""

    def __init__(self):
        super().__init__()
        self.tasks = ALL_TASKS
        self.logits = {t.name: torch.linspace(-1, 1, t.num_outputs) for t in ALL_TASKS}

    def forward(self, inputs, pad_mask=None, masks=None):
        x = inputs["face"]
        return {
            t.name: self.logits[t.name].expand(x.shape[0], x.shape[1], -1)
            if t.level == "frame"
            else self.logits[t.name].expand(x.shape[0], -1)
            for t in self.tasks
        }


class FrameSum(nn.Module):
    """Per-frame output = sum of that frame's features: window-independent, so averaging is exact."""

    tasks = [TASKS["va"]]

    def forward(self, inputs, pad_mask=None, masks=None):
        return {"va": inputs["face"].sum(dim=-1, keepdim=True).expand(-1, -1, 2)}


def test_overlap_averaging_is_exact():
    model = ConstantModel()
    out = predict_sequence(model, TrackSequence("t", {"face": np.zeros((23, 4), np.float32)}), 6, 4)
    assert set(out) == set(TASKS)
    for name in ("expr", "ce"):
        expected = torch.softmax(model.logits[name], 0).numpy()
        assert np.allclose(out[name], expected[None].repeat(23, 0))
    assert np.allclose(out["au"], torch.sigmoid(model.logits["au"]).numpy()[None].repeat(23, 0))
    for name in ("va", "emi"):  # emi is a video task: the mean over windows on every frame
        assert out[name].shape == (23, TASKS[name].num_outputs)
        assert np.allclose(out[name], model.logits[name].numpy()[None].repeat(23, 0))
    feats = np.random.default_rng(0).normal(size=(23, 3)).astype(np.float32)
    out = predict_sequence(FrameSum(), TrackSequence("t", {"face": feats}), 6, 4, batch_size=2)
    assert np.allclose(out["va"][:, 0], feats.sum(axis=1), atol=1e-6)


def test_predict_sequence_restores_training_mode():
    model = FrameSum().train()
    predict_sequence(model, TrackSequence("t", {"face": np.zeros((5, 2), np.float32)}), 4, 2)
    assert model.training
