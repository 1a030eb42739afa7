"""The user's commands on the real sets: the check report, and real training steps."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from mrcnn.config import compose_config
from mrcnn.data.check import run
from mrcnn.train import train

QUICK = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "data.num_workers=0",
    "data.image_size=128",
    "data.max_image_size=128",
    "data.batch_size=2",
    "logger=none",
]


def _check(capsys, overrides):
    status = run(compose_config(overrides, config_name="check"))
    printed = capsys.readouterr()  # the report on stdout, a user error on stderr
    return status, printed.out + printed.err


def test_check_pennfudan(capsys, pennfudan_dir):
    status, out = _check(capsys, ["data=pennfudan"])
    assert status == 0, out
    assert "images:                  170" in out and "instances (trained on):  423" in out
    assert "1  pedestrian" in out and "OK: the data can be trained on." in out


def test_check_coco128(capsys, coco128_dir):
    status, out = _check(capsys, ["data=coco128"])
    assert status == 0, out
    assert "images:                  128" in out and "instances (trained on):  929" in out
    assert "crowd regions (eval only): 10" in out
    assert "images without instances: 2" in out
    assert re.search(r"\n +80 +toothbrush +90 +5\n", out) and "num_classes=81" in out
    assert re.search(r"\n +12 +stop sign +13 +2\n", out)  # label 12 is COCO id 13


def test_check_fails_with_one_message_per_problem(capsys, pennfudan_dir, tmp_path):
    """A copy of a few PennFudan pairs with a truncated image and a resized mask: exit 1."""
    root = tmp_path / "penn"
    for sub in ("PNGImages", "PedMasks"):
        (root / sub).mkdir(parents=True)
    for stem in ("FudanPed00001", "FudanPed00002", "FudanPed00003"):
        shutil.copy(pennfudan_dir / "PNGImages" / f"{stem}.png", root / "PNGImages")
        shutil.copy(pennfudan_dir / "PedMasks" / f"{stem}_mask.png", root / "PedMasks")
    truncated = root / "PNGImages" / "FudanPed00001.png"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    from PIL import Image

    mask = root / "PedMasks" / "FudanPed00002_mask.png"
    Image.open(mask).crop((0, 0, 100, 100)).save(mask)
    status, out = _check(
        capsys, ["data=pennfudan", f"paths.data_dir={tmp_path}", "data.root=${paths.data_dir}/penn"]
    )
    assert status == 1
    assert "unreadable files:        1" in out and "mask/image size mismatches: 1" in out
    assert "FAILED: 2 problem(s)" in out
    assert "FudanPed00001.png is truncated or corrupt" in out
    assert "FudanPed00002_mask.png is 100x100 (WxH) but the image is" in out


def test_check_fails_when_nothing_is_usable(capsys, tmp_path):
    from tests.data.tmp_data import mask_folder

    mask_folder(tmp_path, {"a": np.zeros((20, 30)), "b": np.zeros((20, 30))})
    status, out = _check(
        capsys,
        [
            "data=mask_folder",
            f"data.root={tmp_path}",
            "data.images_dir=images",
            "data.masks_dir=masks",
            "data.mask_suffix=_mask",
        ],
    )
    assert status == 1 and "no usable instance at all in 2 images" in out


def test_check_reports_a_broken_json(capsys, tmp_path):
    from tests.data.tmp_data import small_coco

    images, annotations = small_coco(tmp_path)
    annotations.write_text("{")
    status, out = _check(
        capsys,
        ["data=coco", f"data.train.images={images}", f"data.train.annotations={annotations}"],
    )
    assert status == 1 and "instances.json is not valid json" in out


# slow: 26 s alone; the default suite stays under 15 min
@pytest.mark.slow
def test_two_training_steps_on_pennfudan(tmp_path, pennfudan_dir):
    cfg = compose_config(
        [
            "data=mask_folder",
            f"data.root={pennfudan_dir}",
            "data.images_dir=PNGImages",
            "data.masks_dir=PedMasks",
            "data.mask_suffix=_mask",
            "data.val_fraction=0.2",
            "data.augment=lsj",
            *QUICK,
        ],
        output_dir=tmp_path,
    )
    metrics = train(cfg)
    assert np.isfinite(metrics["val/loss"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["categories"]["names"] == ["object"]


def test_two_training_steps_on_coco128_with_a_val_set(tmp_path, coco128_dir):
    root = coco128_dir
    # A validation json with the first 4 images (ids and categories as in the original).
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    keep = {im["id"] for im in data["images"][:4]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    (tmp_path / "val.json").write_text(json.dumps(data))
    cfg = compose_config(
        [
            "data=coco",
            f"data.train.images={root / 'val2017'}",
            f"data.train.annotations={root / 'annotations/instances_train2017.json'}",
            f"data.val.images={root / 'val2017'}",
            f"data.val.annotations={tmp_path / 'val.json'}",
            "data.augment=multiscale",
            *QUICK,
        ],
        output_dir=tmp_path / "run",
    )
    metrics = train(cfg)
    assert np.isfinite(metrics["val/loss"])
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    categories = checkpoint["hyper_parameters"]["categories"]
    assert len(categories["names"]) == 80 and categories["dataset_ids"][-1] == 90


def test_coco_without_val_splits_train_deterministically(coco128_dir):
    from hydra.utils import instantiate

    cfg = compose_config(["data=coco128", "data.val_fraction=0.25"])
    assert cfg.data.val.images is None
    first, second = instantiate(cfg.data), instantiate(cfg.data)
    first.setup(), second.setup()
    assert first.val_source is None
    assert first.val_set.dataset.indices == second.val_set.dataset.indices
    assert len(first.val_set) == 32 and len(first.train_set) == 96


@pytest.mark.parametrize("name", ["coco", "mask_folder"])
def test_required_paths_are_asked_for(name):
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue):
        from hydra.utils import instantiate

        instantiate(compose_config([f"data={name}"]).data)


def test_training_stops_when_an_epoch_has_no_usable_instance(tmp_path):
    from mrcnn.data.errors import DataError
    from tests.data.tmp_data import mask_folder

    (tmp_path / "data").mkdir()
    root = mask_folder(tmp_path / "data", {s: np.zeros((40, 48)) for s in "abcd"})
    cfg = compose_config(
        [
            "data=mask_folder",
            f"data.root={root}",
            "data.mask_suffix=_mask",
            "data.val_fraction=0.25",
            "data.num_workers=0",
            "data.batch_size=2",
            "data.image_size=64",
            "data.max_image_size=64",
            "trainer.max_steps=4",
            "trainer.enable_progress_bar=false",
            "logger=none",
            "callbacks=none",
        ],
        output_dir=tmp_path / "run",
    )
    with pytest.raises(DataError, match=r"No usable instance in a whole epoch \(2 batches\)"):
        train(cfg)
