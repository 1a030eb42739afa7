"""`mrcnn check <data overrides>`: is this data set ready to train on?

Builds the data sets exactly as training does (same config, same classes, same validation) and
reads every item once: counts, a per-class histogram, and every problem. Exits 1 (the status of
every user error) with one clear message per problem when the data cannot be trained on, 0
otherwise (warnings do not fail).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from mrcnn.argv import prepare_command_line
from mrcnn.builders import build_datamodule
from mrcnn.config import CONFIG_DIR
from mrcnn.data.base import InstanceDataset
from mrcnn.data.errors import DataError, SizeMismatchError, UnreadableFileError, listing
from mrcnn.data.targets import CLIPPED_BOX, DEGENERATE_BOX, EMPTY_MASK
from mrcnn.errors import EXIT_USER_ERROR, user_message
from mrcnn.task import command, report_user_error, reportable_user_error

COMMAND = "mrcnn check"


@dataclass
class Report:
    """What a scan of one data set found."""

    name: str
    description: str = ""
    images: int = 0
    instances: int = 0
    per_class: Counter = field(default_factory=Counter)
    crowd: int | None = None
    without_instances: int = 0
    dropped: Counter = field(default_factory=Counter)
    tiny_masks: int = 0
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [*self.unreadable, *self.size_mismatch, *self.other_errors]


def scan(dataset: InstanceDataset, name: str, tiny_mask_area: int = 16) -> Report:
    """Read every item of a data set and count what training would see and drop."""
    report = Report(
        name=name, description=dataset.describe(), images=len(dataset), crowd=dataset.num_crowd
    )
    report.warnings += dataset.annotation_warnings()
    for index in tqdm(range(len(dataset)), desc=f"checking {name}", unit="img", file=sys.stdout):
        try:
            _, target, dropped = dataset.load(index)
        except UnreadableFileError as error:
            report.unreadable.append(str(error))
            continue
        except SizeMismatchError as error:
            report.size_mismatch.append(str(error))
            continue
        except DataError as error:
            report.other_errors.append(str(error))
            continue
        labels = target["labels"].tolist()
        report.instances += len(labels)
        report.per_class.update(labels)
        report.without_instances += not labels
        report.dropped.update(dropped)
        if labels:
            areas = target["masks"].flatten(1).sum(dim=1, dtype=int)
            report.tiny_masks += int((areas < tiny_mask_area).sum())
    return report


def render(report: Report, categories, max_messages: int = 20) -> str:
    """The report as text for a terminal."""
    lines = [
        f"== {report.name} ==",
        f"data: {report.description}",
        f"images:                  {report.images}",
        f"instances (trained on):  {report.instances}",
        f"crowd regions (eval only): {report.crowd if report.crowd is not None else 'n/a'}",
        f"images without instances: {report.without_instances} (kept as negatives)",
        f"empty masks (dropped):   {report.dropped.get(EMPTY_MASK, 0)}",
        f"degenerate boxes (dropped): {report.dropped.get(DEGENERATE_BOX, 0)}",
        f"out-of-image boxes (clipped): {report.dropped.get(CLIPPED_BOX, 0)}",
        f"tiny masks (< threshold px): {report.tiny_masks}",
        f"unreadable files:        {len(report.unreadable)}",
        f"mask/image size mismatches: {len(report.size_mismatch)}",
        "per class (label  name  dataset id  instances):",
    ]
    for label, name in enumerate(categories.names, start=1):
        count = report.per_class.get(label, 0)
        lines.append(f"  {label:>4}  {name:<20} {categories.dataset_id(label):>6}  {count}")
    if report.warnings:
        lines.append(f"warnings ({len(report.warnings)}):")
        lines.append(listing(report.warnings, max_messages))
    return "\n".join(lines)


def run(cfg: DictConfig) -> int:
    """Build the configured data, scan it, print the report; the exit status (0 = trainable).

    Data that cannot even be loaded is reported as every command reports a user error
    (:func:`mrcnn.task.report_user_error`), with the same exit status.
    """
    try:
        datamodule = build_datamodule(cfg)
    except Exception as error:  # Hydra wraps the data set's own error
        cause = reportable_user_error(error)
        if cause is None:
            raise
        report_user_error(COMMAND, f"the data cannot be loaded: {user_message(cause)}")
        return EXIT_USER_ERROR
    categories = datamodule.categories
    splits = [("train", datamodule.train_source)]
    if datamodule.val_source is not None:
        splits.append(("val", datamodule.val_source))
    for name, dataset in splits:
        if not isinstance(dataset, InstanceDataset):
            report_user_error(
                COMMAND,
                f"the {name} data set is a {type(dataset).__name__}; the check reads data sets "
                "built on mrcnn.data.base.InstanceDataset (every format mrcnn ships).",
            )
            return EXIT_USER_ERROR
    tiny, limit = int(cfg.get("tiny_mask_area", 16)), int(cfg.get("max_messages", 20))
    errors: list[str] = []
    for name, dataset in splits:
        report = scan(dataset, name, tiny)
        print(render(report, categories, limit))
        errors += report.errors
        if name == "train" and report.instances == 0 and not report.errors:
            errors.append(
                f"train: no usable instance at all in {report.images} images: every image is "
                "empty or every mask was dropped. Check the masks (0 = background) and classes."
            )
    print(f"categories: {len(categories.names)} -> num_classes={categories.num_classes}")
    if errors:
        print(f"\nFAILED: {len(errors)} problem(s) stop training on this data:")
        print(listing(errors, limit))
        return EXIT_USER_ERROR
    print("\nOK: the data can be trained on.")
    return 0


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="check")
@command(COMMAND)
def main(cfg: DictConfig) -> None:
    """``mrcnn check`` (see module doc)."""
    sys.exit(run(cfg))


def cli() -> None:
    """``mrcnn check``, ``mrcnn-check`` and ``python -m mrcnn.data.check``."""
    prepare_command_line("check")
    main()


if __name__ == "__main__":
    cli()
