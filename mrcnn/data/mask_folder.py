"""Mask-folder instance segmentation: an image folder and a folder of instance-id masks.

Each image ``<stem><ext>`` pairs with the mask ``<stem><mask_suffix><mask ext>``. In a mask, 0 is
background and every other value is one instance (PennFudanPed's ``PedMasks`` layout). All
instances get one class (``class_name``) unless a sidecar file gives them classes:

.. code-block:: yaml

    classes: [pedestrian, cyclist]   # label order: label 1 is the first name
    default: pedestrian              # optional: class of any instance not listed below
    ids: {1: pedestrian, 2: cyclist} # optional: an id means this class in every mask
    images:                          # optional: per image stem, id -> class (wins over ids)
      FudanPed00001: {2: cyclist}

The file may be YAML or JSON (JSON is YAML). See docs/data.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.data.errors import DataError, SizeMismatchError, listing
from mrcnn.data.images import IMAGE_EXTENSIONS, normalise_extensions, read_image, read_mask

MASK_EXTENSIONS = (".png", ".tif", ".tiff")


class ClassMap:
    """Which class each (image, instance id) has, from a sidecar file; see the module doc."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(
                f"Classes file {self.path} does not exist. Set data.classes_file to a YAML/JSON "
                "file (format in docs/data.md) or to null for a single class."
            )
        try:
            spec = yaml.safe_load(self.path.read_text())
        except yaml.YAMLError as error:
            raise DataError(f"Classes file {self.path} is not valid YAML/JSON: {error}") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
            raise DataError(
                f"Classes file {self.path} needs a 'classes' list of names (label order), e.g. "
                "classes: [pedestrian, cyclist]; see docs/data.md."
            )
        self.categories = Categories.from_names(spec["classes"])
        unknown_keys = set(spec) - {"classes", "default", "ids", "images"}
        if unknown_keys:
            raise DataError(
                f"Classes file {self.path}: unknown keys {sorted(unknown_keys)}; allowed: "
                "classes, default, ids, images."
            )
        self.default = self._label(spec.get("default"), "default") if spec.get("default") else None
        self.ids = {int(k): self._label(v, f"ids.{k}") for k, v in (spec.get("ids") or {}).items()}
        self.images = {
            str(stem): {int(k): self._label(v, f"images.{stem}.{k}") for k, v in ids.items()}
            for stem, ids in (spec.get("images") or {}).items()
        }

    def _label(self, name: Any, where: str) -> int:
        if name not in self.categories.names:
            raise DataError(
                f"Classes file {self.path}: {where} names class {name!r}, which is not in "
                f"classes {list(self.categories.names)}. Add it to 'classes' or fix the name."
            )
        return self.categories.names.index(name) + 1

    def label(self, stem: str, instance_id: int, source: str) -> int:
        per_image = self.images.get(stem, {})
        if instance_id in per_image:
            return per_image[instance_id]
        if instance_id in self.ids:
            return self.ids[instance_id]
        if self.default is not None:
            return self.default
        raise DataError(
            f"{source}: instance id {instance_id} has no class in {self.path}. Add it under "
            f"'images: {{{stem}: {{{instance_id}: <class>}}}}' or 'ids', or set 'default'."
        )


class MaskFolderDataset(InstanceDataset):
    """Images paired by name with instance-id masks.

    Args:
        root: folder holding ``images_dir`` and ``masks_dir``.
        images_dir, masks_dir: sub-folders (relative to root) of images and of masks.
        mask_suffix: what the mask's stem adds to the image's (``_mask``: a.png -> a_mask.png).
        image_extensions, mask_extensions: file endings looked at (case-insensitive); images
            default to every ending mrcnn reads (:data:`~mrcnn.data.images.IMAGE_EXTENSIONS`).
        class_name: the single class when there is no ``classes_file``.
        classes_file: sidecar YAML/JSON giving instances classes (relative to root or absolute).
    """

    def __init__(
        self,
        root: str | Path,
        images_dir: str = "images",
        masks_dir: str = "masks",
        mask_suffix: str = "",
        image_extensions: Sequence[str] | None = None,
        mask_extensions: Sequence[str] = MASK_EXTENSIONS,
        class_name: str = "object",
        classes_file: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_folder = self.root / images_dir
        self.mask_folder = self.root / masks_dir
        self.mask_suffix = mask_suffix
        for folder, key in ((self.image_folder, "images_dir"), (self.mask_folder, "masks_dir")):
            if not folder.is_dir():
                raise DataError(
                    f"Folder {folder} does not exist. Set data.root and data.{key} so that "
                    "root/images_dir holds the images and root/masks_dir the masks."
                )
        self.class_map = None
        if classes_file:
            path = Path(classes_file)
            self.class_map = ClassMap(path if path.is_absolute() else self.root / path)
            self.categories = self.class_map.categories
        else:
            self.categories = Categories.from_names([class_name])
        if image_extensions is None:
            image_extensions = IMAGE_EXTENSIONS
        self._pair(normalise_extensions(image_extensions), normalise_extensions(mask_extensions))

    def _pair(self, image_ext: tuple[str, ...], mask_ext: tuple[str, ...]) -> None:
        def files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
            found: dict[str, Path] = {}
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower() in extensions:
                    if path.stem in found:
                        raise DataError(
                            f"Two files with the stem {path.stem!r} in {folder}: "
                            f"{found[path.stem].name} and {path.name}. Keep one of them."
                        )
                    found[path.stem] = path
            return found

        images = files(self.image_folder, image_ext)
        masks = files(self.mask_folder, mask_ext)
        # An image folder that is also the mask folder: masks are not images of their own.
        if self.image_folder.resolve() == self.mask_folder.resolve() and self.mask_suffix:
            images = {s: p for s, p in images.items() if not s.endswith(self.mask_suffix)}
        wanted = {stem + self.mask_suffix: stem for stem in images}
        lonely_images = sorted(
            p.name for s, p in images.items() if s + self.mask_suffix not in masks
        )
        lonely_masks = sorted(p.name for s, p in masks.items() if s not in wanted)
        if lonely_images or lonely_masks:
            problems = [f"image {self.image_folder / n} has no mask" for n in lonely_images]
            problems += [f"mask {self.mask_folder / n} has no image" for n in lonely_masks]
            raise DataError(
                f"Mask folder {self.root}: {len(lonely_images)} image(s) without a mask and "
                f"{len(lonely_masks)} mask(s) without an image (a mask of image a.png is "
                f"a{self.mask_suffix}.png; mask_suffix={self.mask_suffix!r}, extensions "
                f"{list(image_ext)} / {list(mask_ext)}):\n{listing(problems)}\n"
                "Add the missing files, remove the strays, or fix data.mask_suffix / extensions."
            )
        if not images:
            raise DataError(
                f"No images found in {self.image_folder} (extensions {list(image_ext)}). "
                "Check data.root, data.images_dir and data.image_extensions."
            )
        stems = sorted(images)
        # Two compact string arrays (fixed-width numpy, no per-item Python objects).
        self._images = np.array([images[s].name for s in stems])
        self._masks = np.array([masks[s + self.mask_suffix].name for s in stems])

    def __len__(self) -> int:
        return len(self._images)

    def source(self, index: int) -> str:
        return f"{self.image_folder / str(self._images[index])} (image {index})"

    def image_hw(self, index: int) -> tuple[int, int]:
        """Height and width from the file header (no pixel decoding), cached."""
        return self._header_hw(index, self.image_folder / str(self._images[index]))

    def describe(self) -> str:
        return (
            f"mask folder {self.root}: {len(self)} image/mask pairs, classes "
            f"{list(self.categories.names)} (instances counted by python -m mrcnn.data.check)"
        )

    def load_raw(self, index: int) -> RawSample:
        source = self.source(index)
        image = read_image(self.image_folder / str(self._images[index]), source)
        mask_path = self.mask_folder / str(self._masks[index])
        ids_image = read_mask(mask_path, source)
        height, width = image.shape[:2]
        if ids_image.shape != (height, width):
            raise SizeMismatchError(
                f"{source}: mask {mask_path} is {ids_image.shape[1]}x{ids_image.shape[0]} (WxH) "
                f"but the image is {width}x{height}. Masks must be drawn on the image they "
                "annotate: re-export the mask at the image's size or pair it with the right image."
            )
        ids = [int(i) for i in np.unique(ids_image) if i != 0]
        stem = Path(str(self._images[index])).stem
        if self.class_map is None:
            labels = [1] * len(ids)
        else:
            labels = [self.class_map.label(stem, i, f"{source}, mask {mask_path}") for i in ids]
        masks = (ids_image[None] == np.array(ids).reshape(-1, 1, 1)).astype(np.uint8)
        return RawSample(image, masks, labels)


def mask_folder_datamodule(root: str | Path, **options: Any):
    """A DetectionDataModule over one mask folder (``data=mask_folder``), split by
    ``val_fraction``: the folder options sit at the top of ``data`` (``data.root=...``) beside
    the loader's; :class:`MaskFolderDataset` takes its own keyword arguments, the data module
    the rest."""
    from mrcnn.data.datamodule import DetectionDataModule

    folder_keys = inspect.signature(MaskFolderDataset).parameters
    folder = {key: value for key, value in options.items() if key in folder_keys}
    loader = {key: value for key, value in options.items() if key not in folder_keys}
    return DetectionDataModule(train=MaskFolderDataset(root, **folder), **loader)
