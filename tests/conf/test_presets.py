"""Debug presets (conf/debug/) and experiment recipes (conf/experiment/), run as typed."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mrcnn.config import CONFIG_DIR, compose_config
from tests.tiny import TINY, TINY_DATA, run_train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# No checkpoint files: they cost seconds to write and nothing here reads them.
NO_CHECKPOINTS = ["callbacks=none", "+trainer.enable_checkpointing=false"]


def scalar_steps(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one TensorBoard scalar series of a run, read back from its event files."""
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    return [(e.step, e.value) for e in accumulator.Reload().Scalars(tag)]


# slow: 27 s alone; the default suite stays under 15 min
@pytest.mark.slow
def test_debug_fast_dev_run_runs_one_batch_and_writes_nothing_else(tmp_path):
    run_train("debug=fast_dev_run", *TINY_DATA, cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "debug").glob("????-??-??/??-??-??")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.trainer.fast_dev_run is True and cfg.task_name == "debug"
    log = (run_dir / "train.log").read_text()
    assert "Returning val/segm_AP=" in log  # one validation batch, COCO-evaluated
    assert not list(run_dir.rglob("*.ckpt")), "fast_dev_run must not write checkpoints"
    assert not list(run_dir.rglob("events.out.tfevents.*")), "nor TensorBoard logs"


def test_debug_overfit_repeats_the_same_two_batches(tmp_path):
    run_train(
        "debug=overfit",
        *TINY,
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        *NO_CHECKPOINTS,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    cfg = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert cfg.trainer.overfit_batches == 2
    assert cfg.data.augment == "none" and cfg.scheduler.decay == "constant"
    # 8 training images in batches of 2 are 4 batches an epoch; overfitting on 2 batches makes
    # each epoch 2 steps long, so the third step (step index 2) starts epoch 1.
    epochs = dict(scalar_steps(tmp_path / "run", "epoch"))
    assert epochs[0] == 0 and epochs[2] == 1


@pytest.mark.parametrize(
    ("profiler", "expected"),
    [
        ("SimpleProfiler", "run_training_batch"),
        # cProfile's per-function table; the same code path as above, so not in every run
        pytest.param("AdvancedProfiler", "cumulative time", marks=pytest.mark.slow),
    ],
)
def test_debug_profiler_writes_its_report_into_the_run_dir(profiler, expected, tmp_path):
    run_train(
        "debug=profiler",
        *TINY,
        f"trainer.profiler._target_=lightning.pytorch.profilers.{profiler}",
        *NO_CHECKPOINTS,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    report = tmp_path / "run" / "fit-profile.txt"
    assert report.is_file()
    assert expected in report.read_text()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name, tmp_path):
    cfg = compose_config([f"experiment={name}"], output_dir=tmp_path)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.task_name == name


def test_coco_experiment_is_torchvisions_reference_recipe(tmp_path):
    cfg = compose_config(["experiment=coco_r50_fpn_1x"], output_dir=tmp_path)
    assert cfg.data.train._target_ == "mrcnn.data.CocoDataset"
    assert cfg.model.detector.rpn_post_nms_top_n_train == 2000  # model=default
    assert cfg.backbone.weights_backbone == "IMAGENET1K_V1"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        0.02,
        0.9,
        1.0e-4,
    )
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.warmup_factor) == (1000, 0.001)
    assert cfg.scheduler.milestones == pytest.approx([16 / 26, 22 / 26], abs=1e-4)
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (26, -1)
    assert cfg.data.batch_size * cfg.trainer.devices == 16


def stardist_layout(data_dir: Path, root: Path) -> Path:
    """The shared one-image StarDist sample in StarDist's train/test layout, as links."""
    sample = data_dir / "stardist_nuclei2d"
    for split in ("train", "test"):
        for folder, source in (("images", "img2d.tif"), ("masks", "mask2d.tif")):
            (root / split / folder).mkdir(parents=True)
            (root / split / folder / "nuclei.tif").symlink_to(sample / source)
    return root


# Real data, from random initialisation (weights cannot be downloaded here), two steps.
REAL_DATA_TINY = [
    "backbone.weights=null",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "evaluation.image_panels=1",
    "data.num_workers=0",
    "data.batch_size=1",
    "data.image_size=128",
    "data.max_image_size=192",
    # model=fast's head sizes (the recipes use torchvision's, 2.5x slower a step)
    "model.detector.rpn_pre_nms_top_n_train=200",
    "model.detector.rpn_post_nms_top_n_train=200",
    "model.detector.rpn_pre_nms_top_n_test=200",
    "model.detector.rpn_post_nms_top_n_test=200",
    "model.detector.box_batch_size_per_image=64",
    "model.detector.box_detections_per_img=20",
    *NO_CHECKPOINTS,
    "hydra.run.dir=run",
]


@pytest.mark.parametrize(
    "name",
    [
        # Their data configs train in other tests; these two recipes only add settings that
        # test_every_experiment_composes resolves.
        pytest.param("pennfudan_r50_fpn", marks=pytest.mark.slow),
        pytest.param("coco128_r50_fpn", marks=pytest.mark.slow),
        # The only test that reads conf/data/stardist.yaml's TIFFs; 47 s alone.
        pytest.param("stardist_nuclei", marks=pytest.mark.slow),
    ],
)
def test_real_data_experiment_trains_two_steps(name, data_dir, tmp_path):
    extra = [f"paths.data_dir={data_dir}"]
    if name == "stardist_nuclei":
        root = stardist_layout(data_dir, tmp_path / "nuclei")
        extra += [f"data.train.root={root / 'train'}", f"data.val.root={root / 'test'}"]
    run_train(f"experiment={name}", *REAL_DATA_TINY, *extra, cwd=tmp_path)
    run_dir = tmp_path / "run"
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.task_name == name
    losses = scalar_steps(run_dir, "train/loss_step")
    assert [step for step, _ in losses] == [0, 1]
    assert "Returning val/segm_AP=" in (run_dir / "train.log").read_text()
