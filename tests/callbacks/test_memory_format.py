"""Channels-last training: on a CPU the default callbacks train the model in channels-last
layout (``callbacks=[default,channels_last]`` on any device), and its checkpoint still loads for
evaluate, predict and export."""

from __future__ import annotations

import torch

from mrcnn.model.checkpoint import load_module
from tests.tiny import TINY_CHECKPOINT_RUN, run_train


def test_default_callbacks_convert_the_model_before_training_on_the_cpu(tmp_path):
    run_dir = tmp_path / "run"
    run_train(*TINY_CHECKPOINT_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
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
    optimizer = checkpoint["optimizer_states"][0]
    assert all(group["fused"] for group in optimizer["param_groups"])  # the default AdamW step
    moments = [s["exp_avg"] for s in optimizer["state"].values()]
    assert any(m.ndim == 4 and m.is_contiguous(memory_format=torch.channels_last) for m in moments)
    loaded = load_module(last)  # a model built in the usual layout takes the weights
    assert torch.equal(loaded.state_dict()[name], weights[name])


def test_channels_last_on_the_cpu_only_leaves_a_gpu_run_alone():
    from types import SimpleNamespace

    from mrcnn.callbacks import ChannelsLast

    def layout_after(devices: str, device: str) -> bool:
        model = torch.nn.Conv2d(3, 8, 3)
        trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        ChannelsLast(devices).setup(trainer, model, "fit")
        return model.weight.is_contiguous(memory_format=torch.channels_last)

    assert layout_after("cpu", "cpu") and layout_after("all", "cpu")
    assert not layout_after("cpu", "cuda") and layout_after("all", "cuda")
