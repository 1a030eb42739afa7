"""mrcnn train: real Lightning runs on the synthetic set (losses logged, checkpoints usable,
failures loud), and a short default run that learns."""

import math

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import Dataset

from mrcnn.config import compose_config
from mrcnn.data import DetectionDataModule, ShapesDataset
from mrcnn.model.module import LOSS_NAMES, MaskRCNNModule, NonFiniteLossError
from mrcnn.train import train
from tests.events import events, scalars
from tests.tiny import TINY, run_train


@pytest.mark.parametrize("backbone", ["resnet50", "resnet50_v2", "resnet101"])
def test_fit_logs_five_finite_losses_and_checkpoint_reloads(backbone, tmp_path):
    cfg = compose_config(
        # multistep: its 100-step warm-up makes the lr rise over these 3 steps (checked below)
        [*TINY, f"backbone={backbone}", "trainer.max_steps=3", "scheduler=multistep"],
        output_dir=tmp_path,
    )
    metrics = train(cfg)

    logged = scalars(tmp_path)
    for stage in ("train", "val"):
        for name in ("loss", *LOSS_NAMES):
            tag = f"{stage}/{name}_step" if stage == "train" else f"{stage}/{name}"
            assert tag in logged, f"{tag} missing; logged: {sorted(logged)}"
            assert all(math.isfinite(v) for v in logged[tag]), tag
    assert len(logged["train/loss_step"]) == 3
    assert len(logged["train/lr"]) == 3 and logged["train/lr"][0] < logged["train/lr"][-1]
    assert math.isfinite(metrics["val/loss"])
    for iou_type in ("bbox", "segm"):
        for stat in ("AP", "AP50", "AP75", "APs", "AR100"):  # defined for these tiny images
            assert 0 <= logged[f"val/{iou_type}_{stat}"][-1] <= 1
            assert f"final/{iou_type}_{stat}" in logged  # TensorBoard's HPARAMS tab
        assert f"val/{iou_type}_APl" not in logged, "undefined (-1) stats must not be logged"
    (panel,) = events(tmp_path).Images("val/ground_truth_vs_prediction")[-1:]
    assert panel.width > panel.height / 2 > 0  # ground truth and prediction side by side
    assert (tmp_path / "config.yaml").is_file()

    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    # The checkpoint alone rebuilds the model: hyper-parameters and classes are inside.
    restored = MaskRCNNModule.load_from_checkpoint(
        checkpoint, load_weights=False, weights_only=True
    )
    assert restored.categories.names == ("circle", "square", "triangle")
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    for key, value in restored.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_last_checkpoint_is_current_when_max_steps_stops_mid_epoch(tmp_path):
    # 8 training images in batches of 2: 4 steps per epoch; stop after 6 (mid-epoch 2).
    cfg = compose_config(
        [*TINY, "trainer.max_steps=6", "trainer.val_check_interval=4", "logger=none"],
        output_dir=tmp_path,
    )
    train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    best = list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1


def test_summed_loss_falls_when_overfitting_two_images(tmp_path):
    cfg = compose_config(
        [
            *TINY,
            "data.train.num_images=2",
            "data.train.empty_fraction=0",
            "trainer.val_check_interval=60",
            "data.augment=none",
            # Why 60 steps at 0.04: at 0.08 for 40 steps the last/first loss ratio swung from
            # 0.21 to 0.43 between seeds and with float32 rounding alone (a RoIAlign equal to
            # torchvision's within 1e-6); at 0.04 for 60 steps it was 0.13-0.23 (3 seeds, both).
            "trainer.max_steps=60",
            "scheduler=constant",
            "scheduler.warmup_steps=5",
            "optimizer.lr=0.04",  # per 16 images: 0.005 for these batches of 2
            "callbacks=none",
        ],
        output_dir=tmp_path,
    )
    train(cfg)
    losses = scalars(tmp_path)["train/loss_step"]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.35 * first, f"loss went from {first:.3f} to {last:.3f} in 60 steps"


class _NaNImages(Dataset):
    """Wraps the model-ready samples of a data set and makes every image NaN."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        return image * float("nan"), target


def _nan_datamodule():
    datamodule = DetectionDataModule(
        ShapesDataset(4, 64, empty_fraction=0),
        ShapesDataset(2, 64, seed=1),
        batch_size=2,
        num_workers=0,
        image_size=64,
        max_image_size=64,
        augment="none",
        group_by_aspect_ratio=False,  # _NaNImages does not expose image sizes
    )
    datamodule.setup()
    datamodule.train_set = _NaNImages(datamodule.train_set)
    return datamodule


def _module(on_nonfinite_loss):
    return MaskRCNNModule(
        categories=ShapesDataset(1).categories.to_dict(),
        backbone={"name": "resnet50"},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.01},
        detector={"min_size": 64, "max_size": 64},
        scheduler=None,
        on_nonfinite_loss=on_nonfinite_loss,
    )


def _trainer(tmp_path):
    return L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )


def test_non_finite_loss_stops_with_step_and_terms(tmp_path):
    with pytest.raises(
        NonFiniteLossError, match=r"step 0 .*loss_classifier=nan.*loss_rpn_box_reg="
    ):
        _trainer(tmp_path).fit(_module("raise"), datamodule=_nan_datamodule())


def test_non_finite_loss_can_skip_the_batch(tmp_path):
    module = _module("skip")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    _trainer(tmp_path).fit(module, datamodule=_nan_datamodule())
    assert module.skipped_batches == 2
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped batch left traces"


# 600 steps of the default recipe (its schedule shortened to fit, about 1.5 minutes on the
# project's 2-core CPU). Measured there on 2026-12-02 (Zen 5 EPYC): segm AP50
# 0.687 at step 600 of this very command (bf16 by precision=auto); the threshold sits well below,
# with margin for float32, other CPUs and seeds. A broken target, mask or schedule stays near 0.
STEPS = 600


MIN_SEGM_AP50 = 0.4


@pytest.mark.slow
def test_a_short_default_run_learns_the_shapes(tmp_path):
    run_train(
        f"trainer.max_steps={STEPS}",
        f"trainer.val_check_interval={STEPS}",
        "hydra.run.dir=run",
        cwd=tmp_path,
        timeout=900,
    )
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    (final,) = events.Scalars("val/segm_AP50")
    assert final.step == STEPS - 1
    assert final.value >= MIN_SEGM_AP50, f"segm AP50 {final.value:.3f} after {STEPS} steps"
