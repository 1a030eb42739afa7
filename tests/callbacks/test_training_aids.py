"""Training aids chosen by one config value: EMA weights and early stopping, each read back from
what the run wrote; per-class AP at validation, read back from TensorBoard."""

from __future__ import annotations

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mrcnn.model.checkpoint import load_module
from tests.tiny import TINY, run_train


def test_ema_weights_are_validated_and_checkpointed(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*TINY, "callbacks=[default,ema]", "callbacks.ema.decay=0.5"]
    run_train(*overrides, "trainer.max_steps=4", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    # The best checkpoint is written at a validation during training: the averaged weights as
    # its state_dict (what was validated), the raw ones beside them.
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == current.keys()
    weight = "model.roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(averaged[weight], current[weight])  # the average, not the last step
    # evaluate and predict load the averaged weights.
    assert load_module(best).state_dict()[weight].equal(averaged[weight])


def test_early_stopping_stops_when_the_metric_stalls(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*TINY, "callbacks=[default,early_stopping]", "trainer.max_steps=12"]
    # No validation can improve AP by 2: the run stops at its second validation (step 4).
    overrides += ["callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=2"]
    run_train(*overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert "EarlyStopping" in str(list(checkpoint["callbacks"]))


def test_validation_logs_ap_per_class_and_names_the_weakest(tmp_path):
    run_dir = tmp_path / "run"
    run_train(*TINY, "data.val.num_images=6", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    tags = EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"]
    per_class = {tag for tag in tags if tag.startswith("val/segm_AP/")}
    assert per_class and per_class <= {f"val/segm_AP/{n}" for n in ("circle", "square", "triangle")}
    assert any(tag.startswith("val/bbox_AP50/") for tag in tags)
    assert "Weakest classes by AP at step 2:" in (run_dir / "train.log").read_text()
