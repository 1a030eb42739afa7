"""YOLO and LabelMe files, as annotation tools export them: details on small files, round trips
from coco128 and PennFudanPed converted here, and the user's commands on them."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn.config import compose_config
from mrcnn.data import CocoDataset, LabelMeDataset, MaskFolderDataset, YoloDataset
from mrcnn.data.check import scan
from mrcnn.data.yolo import label_path
from tests.data.converters import coco_items, mask_folder_items, write_labelme, write_yolo
from tests.data.tmp_data import small_coco, write_image
from tests.tiny import TINY_RUN, run_module, run_train

SMALL = ["data.num_workers=0", "data.batch_size=2", "data.image_size=96", "data.max_image_size=96"]


def small_yolo(tmp_path: Path, **options) -> Path:
    """small_coco (two 40x60 images: a square and a two-part instance; one empty) as YOLO."""
    items, names = coco_items(*small_coco(tmp_path / "coco"))
    return write_yolo(tmp_path / "yolo", {"train": items}, names, **options)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float((a & b).sum() / (a | b).sum())


def assert_same_instances(reference, converted, pairs, label_of, min_iou=0.9, exact=False):
    """Same labels (through label_of) and masks, instance by instance, for (ref, conv) indices."""
    for ref_index, conv_index in pairs:
        _, expected = reference[ref_index]
        _, got = converted[conv_index]
        assert got["labels"].tolist() == [label_of(x) for x in expected["labels"].tolist()]
        for want, have in zip(expected["masks"], got["masks"], strict=True):
            if exact:
                assert torch.equal(want, have), converted.source(conv_index)
            else:
                assert mask_iou(want, have) >= min_iou, converted.source(conv_index)


# -- YOLO details -------------------------------------------------------------------------------


def test_yolo_polygons_become_masks_and_class_ids_map_to_labels_and_back(tmp_path):
    root = small_yolo(tmp_path, names_as_dict=True)
    dataset = YoloDataset(root)
    coco = CocoDataset(*small_coco(tmp_path / "coco"))
    assert dataset.categories.names == ("cat", "dog") and dataset.categories.dataset_ids == (0, 1)
    assert len(dataset) == 2 and dataset.num_instances == 2 and dataset.num_empty == 1
    assert not label_path(root / "images" / "train" / "b.png").exists()  # empty: no label file
    # The two-part instance (bridged in one line) gives the same mask as its COCO polygons.
    assert_same_instances(coco, dataset, [(0, 0), (1, 1)], lambda x: x, min_iou=0.97)
    assert dataset.image_hw(0) == (40, 60) and dataset[1][1]["boxes"].shape == (0, 4)
    assert "2 images (1 without objects), 2 instances of 2 classes" in dataset.describe()


def test_yolo_label_path_follows_ultralytics():
    assert label_path(Path("/d/images/train/a.jpg")) == Path("/d/labels/train/a.txt")
    assert label_path(Path("/images/x/images/v/a.b.png")) == Path("/images/x/labels/v/a.b.txt")
    assert label_path(Path("/d/pics/a.jpg")) == Path("/d/pics/a.txt")


def test_yolo_splits_val_and_moved_path(tmp_path):
    items, names = coco_items(*small_coco(tmp_path / "coco"))
    root = write_yolo(tmp_path / "yolo", {"train": items, "val": items[:1]}, names)
    spec = (root / "data.yaml").read_text().replace("path: .", "path: /elsewhere/dataset")
    (root / "data.yaml").write_text(spec)  # moved from another machine: relative to the yaml
    datamodule = run_datamodule(["data=yolo", f"data.root={root}"])
    assert len(datamodule.train_source) == 2 and len(datamodule.val_source) == 1
    # val naming train's images (Ultralytics' coco128.yaml): a held-out split instead.
    (root / "data.yaml").write_text(spec.replace("val: images/val", "val: images/train"))
    datamodule = run_datamodule(["data=yolo", f"data.root={root}", "data.val_fraction=0.5"])
    assert datamodule.val_source is None and len(datamodule.val_set) == 1


def run_datamodule(overrides):
    from hydra.utils import instantiate

    datamodule = instantiate(compose_config([*overrides, *SMALL]).data)
    datamodule.setup()
    return datamodule


# -- LabelMe details ----------------------------------------------------------------------------


def labelme_json(path: Path, shapes: list[dict], image: str | None = "a.png", **extra) -> Path:
    path.write_text(json.dumps({"shapes": shapes, "imagePath": image, "imageData": None, **extra}))
    return path


def shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": group_id}


def test_labelme_shapes_groups_and_skipped_kinds(tmp_path):
    write_image(tmp_path / "a.png", 40, 60)
    labelme_json(
        tmp_path / "a.json",
        [
            shape("dog", [[2, 2], [12, 10]], "rectangle"),
            shape("cat", [[40, 20], [40, 26]], "circle"),  # radius 6
            shape("cat", [[2, 30], [10, 30], [10, 38]], group_id=1),  # two parts, one instance
            shape("cat", [[50, 30], [58, 30], [58, 38]], group_id=1),
            shape("cat", [[0, 0], [5, 5]], "line"),
            shape("cat", [[3, 3]], "point"),
            shape("cat", [[20, 20], [24, 24]], "mask"),  # LabelMe 5.3+ bitmap: not read
        ],
        imageHeight=40,
        imageWidth=60,
    )
    dataset = LabelMeDataset(tmp_path)
    assert dataset.categories.names == ("cat", "dog")  # sorted, whatever the order in files
    _, target = dataset[0]
    assert target["labels"].tolist() == [2, 1, 1]
    assert target["boxes"][0].tolist() == [2, 2, 12, 10]
    circle = target["masks"][1]
    assert abs(int(circle.sum()) - np.pi * 36) < 10 and circle[20, 40] == 1
    parts = target["masks"][2]
    assert parts[35, 8] == 1 and parts[35, 56] == 1 and parts[35, 30] == 0
    assert dataset.skipped == Counter({"line": 1, "point": 1, "mask": 1})
    warnings = dataset.annotation_warnings()
    assert any("1 'line' shape(s) skipped" in w for w in warnings)
    assert any(
        "1 'mask' shape(s) skipped" in w and "redraw them as polygons" in w for w in warnings
    )
    assert "skipped shapes without an area" in dataset.describe()


def test_labelme_embedded_image_and_given_labels(tmp_path):
    write_image(tmp_path / "pixels.png", 30, 20)
    import base64

    data = base64.b64encode((tmp_path / "pixels.png").read_bytes()).decode()
    (tmp_path / "pixels.png").unlink()
    labelme_json(tmp_path / "a.json", [shape("cat", [[1, 1], [9, 1], [9, 9]])], imageData=data)
    dataset = LabelMeDataset(tmp_path, labels=["dog", "cat"])
    image, target = dataset[0]
    assert image.shape == (3, 30, 20) and dataset.image_hw(0) == (30, 20)
    assert target["labels"].tolist() == [2] and dataset.categories.names == ("dog", "cat")


# -- Round trips from the real sets -------------------------------------------------------------


@pytest.fixture(scope="module")
def coco128(coco128_dir):
    root = coco128_dir
    images, annotations = root / "val2017", root / "annotations" / "instances_val2017.json"
    return CocoDataset(images, annotations), *coco_items(images, annotations)


def class_counts(report, categories) -> dict[str, int]:
    return {categories.name(label): n for label, n in report.per_class.items()}


def test_yolo_from_coco128_round_trip_and_check_command(coco128, tmp_path):
    coco, items, names = coco128
    root = write_yolo(tmp_path / "yolo", {"train": items}, names, names_as_dict=True)
    result = run_module("mrcnn.data.check", "data=yolo", f"data.root={root}", cwd=tmp_path)
    out = result.stdout
    assert "images:                  128" in out and "instances (trained on):  929" in out
    assert "images without instances: 2" in out and "OK: the data can be trained on." in out
    assert "empty masks (dropped):   0" in out and "degenerate boxes (dropped): 0" in out
    assert re.search(r"\n +80 +toothbrush +79 +5\n", out)  # label 80 is YOLO class 79
    expected = Counter(names[i] for item in items for i, _ in item.instances)
    for label, name in enumerate(names, start=1):
        count = re.search(rf"\n +{label} +{re.escape(name)} +{label - 1} +(\d+)\n", out)
        assert int(count.group(1)) == expected[name], name
    yolo = YoloDataset(root)
    order = sorted(item.image.name for item in items)
    pairs = [(i, order.index(items[i].image.name)) for i in range(0, len(items), 8)]
    assert_same_instances(coco, yolo, pairs, lambda label: label)


def test_labelme_from_coco128_round_trip(coco128, tmp_path):
    coco, items, names = coco128
    root = write_labelme(tmp_path / "labelme", items, names, embed=2)
    labelme = LabelMeDataset(root)
    report = scan(labelme, "train")
    assert (report.images, report.instances, report.without_instances) == (128, 929, 2)
    assert not report.errors and sum(report.dropped.values()) == 0
    expected = Counter(names[i] for item in items for i, _ in item.instances)
    assert class_counts(report, labelme.categories) == expected
    order = sorted(item.image.stem for item in items)
    pairs = [(i, order.index(items[i].image.stem)) for i in [0, 1, *range(2, len(items), 8)]]
    # LabelMe knows only the labels its files use (71 of coco128's 80 categories).
    assert labelme.categories.names == tuple(sorted(expected))
    to_labelme = {
        c: labelme.categories.names.index(n) + 1 for c, n in enumerate(names, 1) if n in expected
    }
    # The same polygons through the same rasteriser: the very same masks.
    assert_same_instances(coco, labelme, pairs, to_labelme.get, exact=True)


def test_yolo_and_labelme_from_pennfudan_round_trip(pennfudan_dir, tmp_path):
    root = pennfudan_dir
    penn = MaskFolderDataset(root, "PNGImages", "PedMasks", "_mask", class_name="pedestrian")
    items = mask_folder_items(root / "PNGImages", root / "PedMasks", "_mask")
    yolo = YoloDataset(write_yolo(tmp_path / "yolo", {"train": items}, ["pedestrian"]))
    labelme = LabelMeDataset(write_labelme(tmp_path / "labelme", items, ["pedestrian"]))
    for converted in (yolo, labelme):
        report = scan(converted, "train")
        assert (report.images, report.instances, report.without_instances) == (170, 423, 0)
        assert not report.errors and sum(report.dropped.values()) == 0
        assert_same_instances(penn, converted, [(i, i) for i in range(0, 170, 10)], int)


# -- The user's commands ------------------------------------------------------------------------


def pennfudan_subset(root: Path, count: int, start: int = 0):
    """``count`` image/mask pairs of PennFudanPed (``root``), from the ``start``-th."""
    items = mask_folder_items(root / "PNGImages", root / "PedMasks", "_mask")
    return items[start : start + count]


def test_train_evaluate_predict_on_yolo(pennfudan_dir, tmp_path):
    from mrcnn.evaluate import evaluate
    from mrcnn.predict import predict

    items = pennfudan_subset(pennfudan_dir, 6)
    root = write_yolo(tmp_path / "yolo", {"train": items[:4], "val": items[4:]}, ["pedestrian"])
    data = ["data=yolo", f"data.root={root}", *SMALL]
    keep_all = "model.detector.box_score_thresh=0.0"
    run_train(*data, *TINY_RUN, keep_all, "logger=none", "hydra.run.dir=run", cwd=tmp_path)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        [f"model_path={checkpoint}", *data, f"output={tmp_path / 'metrics.json'}"],
        config_name="evaluate",
    )
    metrics = evaluate(cfg)
    assert "segm_AP" in metrics and json.loads((tmp_path / "metrics.json").read_text())
    cfg = compose_config(
        [
            f"model_path={checkpoint}",
            f"input={root / 'images' / 'val'}",
            f"output={tmp_path / 'predicted'}",
            "evaluation.score_threshold=0.0",
            "num_workers=0",
        ],
        config_name="predict",
    )
    predict(cfg)
    written = json.loads((tmp_path / "predicted" / "images.json").read_text())
    assert written["categories"] == [{"id": 0, "name": "pedestrian"}]  # YOLO's own class id
    predictions = json.loads((tmp_path / "predicted" / "predictions.json").read_text())
    assert {p["category_id"] for p in predictions} <= {0}


def test_train_on_labelme_with_a_val_folder(pennfudan_dir, tmp_path):
    items = pennfudan_subset(pennfudan_dir, 6)
    train = write_labelme(tmp_path / "train", items[:4], ["pedestrian"])
    val = write_labelme(tmp_path / "val", items[4:], ["pedestrian"], embed=1)
    run_train(
        "data=labelme",
        f"data.root={train}",
        f"data.val_root={val}",
        *SMALL,
        *TINY_RUN,
        "logger=none",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    log = (tmp_path / "run" / "train.log").read_text()
    assert "LabelMe" in log and "4 images" in log and "2 images" in log
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["categories"]["names"] == ["pedestrian"]


def test_exif_rotated_image_is_read_upright_for_polygons(tmp_path):
    """Annotation tools show (and annotate) images upright; so do both readers."""
    stored = np.zeros((30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: 30 wide, 50 high
    (tmp_path / "yolo" / "images" / "train").mkdir(parents=True)
    (tmp_path / "yolo" / "labels" / "train").mkdir(parents=True)
    Image.fromarray(stored).save(tmp_path / "yolo/images/train/r.png", exif=exif.tobytes())
    (tmp_path / "yolo/labels/train/r.txt").write_text("0 0 0 0.5 0 0.5 0.2 0 0.2\n")
    (tmp_path / "yolo/data.yaml").write_text("train: images/train\nnames: [thing]\n")
    dataset = YoloDataset(tmp_path / "yolo")
    image, target = dataset[0]
    assert image.shape == (3, 50, 30) and dataset.image_hw(0) == (50, 30)
    assert target["boxes"].tolist() == [[0, 0, 15, 10]]
