"""Every kind of bad input stops with a message naming the file, the id and the fix."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from mrcnn.data import CocoDataset, DataError, LabelMeDataset, MaskFolderDataset, YoloDataset
from mrcnn.data.coco import optional_coco_dataset
from tests.data.tmp_data import mask_folder, small_coco, write_image


def _rewrite(annotations, change):
    data = json.loads(annotations.read_text())
    change(data)
    annotations.write_text(json.dumps(data))


def test_missing_image_file(tmp_path):
    images, annotations = small_coco(tmp_path)
    (images / "b.png").unlink()
    dataset = CocoDataset(images, annotations)
    with pytest.raises(DataError, match=r"image id 12 .*b\.png does not exist.*remove the entry"):
        dataset[1]


def test_unreadable_image_file(tmp_path):
    images, annotations = small_coco(tmp_path)
    (images / "a.png").write_text("not an image")
    with pytest.raises(DataError, match=r"image id 11 .*cannot read .*a\.png as an image.*Replace"):
        CocoDataset(images, annotations)[0]


def test_truncated_image_file(tmp_path):
    images, annotations = small_coco(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(
        images / "a.jpg", quality=95
    )
    data = (images / "a.jpg").read_bytes()
    (images / "a.png").unlink()
    (images / "a.jpg").write_bytes(data[: len(data) // 2])
    _rewrite(annotations, lambda d: d["images"][0].update(file_name="a.jpg"))
    with pytest.raises(DataError, match=r"image id 11 .*a\.jpg is truncated or corrupt.*Re-down"):
        CocoDataset(images, annotations)[0]


def test_malformed_json(tmp_path):
    images, annotations = small_coco(tmp_path)
    annotations.write_text(annotations.read_text()[:-20])
    with pytest.raises(DataError, match=r"instances\.json is not valid json: .* line 1, column"):
        CocoDataset(images, annotations)


def test_json_that_is_not_coco_instances(tmp_path):
    images, annotations = small_coco(tmp_path)
    annotations.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"lacks the COCO keys \['annotations', 'categories'\]"):
        CocoDataset(images, annotations)


def test_annotation_for_unknown_image_and_category_lists_both(tmp_path):
    images, annotations = small_coco(tmp_path)

    def change(data):
        data["annotations"][0]["image_id"] = 99
        data["annotations"][1]["category_id"] = 5

    _rewrite(annotations, change)
    with pytest.raises(DataError) as error:
        CocoDataset(images, annotations)
    message = str(error.value)
    assert "annotation id 1 is for image id 99, which is not in 'images'" in message
    assert (
        "annotation id 2 (image id 11) has category id 5, which is not in 'categories'" in message
    )
    assert "instances.json: 2 problem(s); fix or remove these entries" in message


def test_duplicate_ids(tmp_path):
    images, annotations = small_coco(tmp_path)

    def change(data):
        data["images"][1]["id"] = 11
        data["annotations"][1]["id"] = 1

    _rewrite(annotations, change)
    with pytest.raises(
        DataError, match=r"(?s)image id 11 appears more than once.*annotation id 1 "
    ):
        CocoDataset(images, annotations)


def test_coco_rle_size_differs_from_image(tmp_path):
    images, annotations = small_coco(tmp_path)
    rle = {"size": [20, 60], "counts": [100, 10, 1090]}
    _rewrite(annotations, lambda d: d["annotations"][0].update(segmentation=rle))
    with pytest.raises(
        DataError,
        match=r"annotation id 1 \(image id 11\) has an RLE mask of size "
        r"60x20 \(WxH\) but its image is 60x40",
    ):
        CocoDataset(images, annotations)


def test_coco_image_size_differs_from_json(tmp_path):
    images, annotations = small_coco(tmp_path)
    write_image(images / "a.png", 41, 60)
    with pytest.raises(DataError, match=r"image id 11 .*image is 60x41 .* json says 60x40"):
        CocoDataset(images, annotations)[0]


def test_mask_folder_mask_size_differs_from_image(tmp_path):
    root = mask_folder(tmp_path, {"a": np.ones((20, 30))})
    write_image(root / "images" / "a.png", 21, 30)
    dataset = MaskFolderDataset(root, mask_suffix="_mask")
    with pytest.raises(
        DataError,
        match=r"a\.png \(image 0\): mask .*a_mask\.png is 30x20 \(WxH\) "
        r"but the image is 30x21.*re-export the mask",
    ):
        dataset[0]


def test_mask_folder_with_unpaired_files(tmp_path):
    root = mask_folder(tmp_path, {"a": np.ones((20, 30)), "b": np.ones((20, 30))})
    (root / "masks" / "a_mask.png").unlink()
    write_image(root / "masks" / "c_mask.png", 20, 30, mode="L")
    with pytest.raises(DataError) as error:
        MaskFolderDataset(root, mask_suffix="_mask")
    message = str(error.value)
    assert "1 image(s) without a mask and 1 mask(s) without an image" in message
    assert "images/a.png has no mask" in message and "masks/c_mask.png has no image" in message
    assert "data.mask_suffix" in message
    with pytest.raises(DataError, match="2 image\\(s\\) without a mask"):  # wrong suffix
        MaskFolderDataset(root, mask_suffix="_seg")


def test_coco_without_any_usable_instance(tmp_path):
    images, annotations = small_coco(tmp_path)
    _rewrite(annotations, lambda d: [a.update(iscrowd=1) for a in d["annotations"]])
    with pytest.raises(DataError, match=r"no usable instance at all \(2 images, 2 crowd regions"):
        CocoDataset(images, annotations)


def test_coco_annotation_without_segmentation(tmp_path):
    images, annotations = small_coco(tmp_path)
    _rewrite(annotations, lambda d: d["annotations"][1].pop("segmentation"))
    with pytest.raises(DataError, match=r"annotation id 2 \(image id 11\) has no usable segm"):
        CocoDataset(images, annotations)


def test_half_a_validation_split(tmp_path):
    images, _ = small_coco(tmp_path)
    with pytest.raises(DataError, match=r"needs both an image folder and an annotation file"):
        optional_coco_dataset(images=images)
    assert optional_coco_dataset() is None


def test_polygon_too_small_to_cover_a_pixel_is_dropped_and_counted(tmp_path):
    images, annotations = small_coco(tmp_path)
    _rewrite(annotations, lambda d: d["annotations"][0].update(segmentation=[[5, 5, 6, 5]]))
    _, target = CocoDataset(images, annotations)[0]
    assert target["labels"].tolist() == [2] and target["num_dropped"] == 1


# -- YOLO and LabelMe ---------------------------------------------------------------------------


def _yolo(tmp_path):
    from tests.data.converters import coco_items, write_yolo

    items, names = coco_items(*small_coco(tmp_path / "coco"))
    return write_yolo(tmp_path / "yolo", {"train": items}, names)


def test_yolo_without_data_yaml(tmp_path):
    root = _yolo(tmp_path)
    (root / "data.yaml").unlink()
    with pytest.raises(DataError, match=r"yolo/data\.yaml does not exist\. Set data\.root to"):
        YoloDataset(root)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2 0.1 0.1 0.5 0.1 0.5 0.5", r"class id 2 is not in data\.yaml's names \(ids 0\.\.1\)"),
        ("0 0.1 0.1 0.5 zero 0.5 0.5", r"'0 0.1 0.1 0.5 zero 0.5 0.5' is not 'class x1 y1"),
        ("0 0.1 0.1 0.5 0.1 0.5", r"5 coordinates; a polygon needs x y pairs of at least 3"),
        ("1 0.5 0.5 0.2 0.2", r"'class cx cy w h' is a YOLO detection box.*segmentation format"),
        ("1 10 10 50 10 50 30", r"coordinates outside 0\.\.1; YOLO labels are normalised"),
    ],
    ids=["class-out-of-range", "not-numbers", "odd-coordinates", "detection-box", "pixels"],
)
def test_yolo_bad_label_line_names_file_and_line(tmp_path, line, message):
    root = _yolo(tmp_path)
    labels = root / "labels" / "train" / "a.txt"
    labels.write_text(labels.read_text() + line + "\n")
    with pytest.raises(DataError, match=r"data\.yaml \(train\): 1 problem\(s\) in label files"):
        YoloDataset(root)
    with pytest.raises(DataError, match=rf"labels/train/a\.txt line 3: {message}"):
        YoloDataset(root)


def test_yolo_data_yaml_under_another_name_is_suggested(tmp_path):
    root = _yolo(tmp_path)
    (root / "data.yaml").rename(root / "coco8-seg.yaml")
    with pytest.raises(DataError, match=r"data\.config_file to its name \(.*yolo holds coco8-seg"):
        YoloDataset(root)
    assert len(YoloDataset(root, config_file="coco8-seg.yaml")) == 2


def test_yolo_number_formats_as_ultralytics_reads_them(tmp_path):
    root = _yolo(tmp_path)
    labels = root / "labels" / "train" / "a.txt"
    labels.write_text(labels.read_text() + "1.0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    assert YoloDataset(root).num_instances == 3  # "1.0" is class 1
    labels.write_text(labels.read_text() + "1 nan 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.raises(DataError, match=r"a\.txt line 4: '1 nan 0\.1 .*' is not 'class x1"):
        YoloDataset(root)


def test_yolo_image_listed_in_a_split_file_but_missing(tmp_path):
    root = _yolo(tmp_path)
    (root / "train.txt").write_text("images/train/a.png\n\n./images/train/gone.png\n")
    spec = (root / "data.yaml").read_text().replace("train: images/train", "train: train.txt")
    (root / "data.yaml").write_text(spec)
    with pytest.raises(DataError) as error:
        YoloDataset(root)
    message = str(error.value)
    assert "1 image(s) of the 'train' split do not exist" in message
    assert re.search(r"yolo/train\.txt line 3: .*yolo/images/train/gone\.png", message)


def test_yolo_labels_not_where_ultralytics_looks(tmp_path):
    root = _yolo(tmp_path)
    (root / "labels").rename(root / "annotations")
    with pytest.raises(
        DataError,
        match=r"none of its 2 images has a label file \(that of .*a\.png "
        r"would be .*yolo/labels/train/a\.txt\)",
    ):
        YoloDataset(root)


def test_yolo_missing_split(tmp_path):
    root = _yolo(tmp_path)
    with pytest.raises(DataError, match=r"data\.yaml has no 'val' split; add 'val: images/val'"):
        YoloDataset(root, split="val")


def test_labelme_json_without_its_image(tmp_path):
    from tests.data.converters import coco_items, write_labelme

    items, names = coco_items(*small_coco(tmp_path / "coco"))
    root = write_labelme(tmp_path / "labelme", items, names)
    (root / "a.png").unlink()
    with pytest.raises(DataError) as error:
        LabelMeDataset(root)
    message = str(error.value)
    assert "LabelMe folder" in message and "1 problem(s)" in message
    assert re.search(r"labelme/a\.json: its image .*labelme/a\.png \(imagePath, relative", message)
    assert "holds no imageData. Put the image there, fix imagePath, or save" in message


def test_labelme_broken_json_and_unknown_label(tmp_path):
    from tests.data.converters import coco_items, write_labelme

    items, names = coco_items(*small_coco(tmp_path / "coco"))
    root = write_labelme(tmp_path / "labelme", items, names)
    with pytest.raises(DataError, match=r"label 'dog' is not among the classes \['cat'\]; add"):
        LabelMeDataset(root, labels=["cat"])
    (root / "b.json").write_text('{"shapes": [')
    with pytest.raises(DataError, match=r"labelme/b\.json is not valid json .*re-save it"):
        LabelMeDataset(root)
    (root / "b.json").write_text('{"version": "5"}')
    with pytest.raises(DataError, match=r"b\.json is not a LabelMe json \(no 'shapes' list\)"):
        LabelMeDataset(root)


def test_labelme_odd_shapes_are_named_or_skipped(tmp_path):
    from tests.data.converters import coco_items, write_labelme

    items, names = coco_items(*small_coco(tmp_path / "coco"))
    root = write_labelme(tmp_path / "labelme", items, names)
    data = json.loads((root / "a.json").read_text())
    data["shapes"] += [{"label": "cat", "points": [[1, 2]], "shape_type": "mask"}]
    (root / "a.json").write_text(json.dumps(data))
    dataset = LabelMeDataset(root)  # a LabelMe 5 mask shape: no polygon, skipped and counted
    assert dataset.skipped == {"mask": 1} and dataset.num_instances == 2
    data["shapes"].append("cat")  # not a shape at all: the 5th
    (root / "a.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"a\.json shape 5: needs a 'label' and 'points'"):
        LabelMeDataset(root)


def test_labelme_image_size_differs_from_json(tmp_path):
    from tests.data.converters import coco_items, write_labelme

    items, names = coco_items(*small_coco(tmp_path / "coco"))
    root = write_labelme(tmp_path / "labelme", items, names)
    (root / "a.png").unlink()
    write_image(root / "a.png", 41, 60)
    with pytest.raises(DataError, match=r"a\.json \(image 0\): the image is 60x41 .* says 60x40"):
        LabelMeDataset(root)[0]
