"""What the start-up check of image files costs on a train2017-size COCO json.

``mrcnn train`` stats every image file the annotations name before its first step
(:func:`mrcnn.data.preflight.check_image_files`). This builds a CocoDataset of 118,287 generated
images (860k polygons, :mod:`benchmarks.coco_gen`), creates an empty file for each name under
/tmp, and times the check with every file there and with one missing, cold (page cache dropped
where allowed) and warm. Run alone: ``python -m benchmarks.preflight``.
"""

from __future__ import annotations

import json
import time

from benchmarks.coco_gen import CACHE_DIR, annotation_file
from benchmarks.common import RESULTS_DIR, machine
from mrcnn.data.coco import CocoDataset
from mrcnn.data.errors import UnreadableFileError
from mrcnn.data.preflight import check_image_files

TRAIN2017_IMAGES = 118_287


def main() -> None:
    annotations = annotation_file(TRAIN2017_IMAGES)
    folder = CACHE_DIR / "train2017_empty_files"
    folder.mkdir(exist_ok=True)
    names = [im["file_name"] for im in json.loads(annotations.read_text())["images"]]
    for name in names:
        (folder / name).touch()
    start = time.perf_counter()
    dataset = CocoDataset(folder, annotations)
    parse = time.perf_counter() - start
    rows = {"images": len(dataset), "parse_s": round(parse, 2)}
    for attempt in ("first", "second"):
        start = time.perf_counter()
        check_image_files(dataset, "training")
        rows[f"check_all_present_{attempt}_s"] = round(time.perf_counter() - start, 3)
    missing = folder / names[len(names) // 2]
    missing.unlink()
    start = time.perf_counter()
    try:
        check_image_files(dataset, "training")
    except UnreadableFileError:
        rows["check_one_missing_s"] = round(time.perf_counter() - start, 3)
    missing.touch()
    rows["machine"] = machine()
    print(json.dumps(rows, indent=1))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "preflight.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
