"""``callbacks=[default,channels_last]``: the model trains in channels-last layout, and its
checkpoint still loads for evaluate, predict and export."""

from __future__ import annotations

import torch

from mrcnn.model.checkpoint import load_module
from tests.tiny import TINY_CHECKPOINT_RUN, run_train


def test_channels_last_preset_converts_the_model_before_training(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*TINY_CHECKPOINT_RUN, "callbacks=[default,channels_last]"]
    run_train(*overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    weights = checkpoint["state_dict"]
    convolutions = [v for k, v in weights.items() if v.ndim == 4 and k.endswith(".weight")]
    assert convolutions
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    name = "model.backbone.body.conv1.weight"  # 7x7: the layouts differ (for 1x1 they agree)
    assert not weights[name].is_contiguous()
    # The optimizer trained the converted weights themselves (its state has their layout).
    moments = [s["exp_avg"] for s in checkpoint["optimizer_states"][0]["state"].values()]
    assert any(m.ndim == 4 and m.is_contiguous(memory_format=torch.channels_last) for m in moments)
    loaded = load_module(last)  # a model built in the usual layout takes the weights
    assert torch.equal(loaded.state_dict()[name], weights[name])
