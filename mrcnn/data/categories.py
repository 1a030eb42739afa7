"""The one place that maps a data set's category ids to the model's contiguous labels and back.

Mask R-CNN wants labels 1..K (0 is background) and ``num_classes = K + 1``. Data sets name their
categories with ids of their own (COCO: 1..90 with gaps), which results files must use again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Categories:
    """Category names in label order (label 1 is ``names[0]``) and the data set's id for each."""

    names: tuple[str, ...]
    dataset_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("A data set needs at least one category; found none.")
        if not self.dataset_ids:
            object.__setattr__(self, "dataset_ids", tuple(range(1, len(self.names) + 1)))
        if len(self.dataset_ids) != len(self.names):
            raise ValueError(
                f"{len(self.names)} category names but {len(self.dataset_ids)} category ids."
            )
        if len(set(self.dataset_ids)) != len(self.dataset_ids):
            raise ValueError(f"Duplicate category ids: {sorted(self.dataset_ids)}.")
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "dataset_ids", tuple(int(i) for i in self.dataset_ids))
        object.__setattr__(
            self, "_label_of", {cid: label for label, cid in enumerate(self.dataset_ids, start=1)}
        )

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Categories:
        """Categories whose data-set ids are simply 1..K (synthetic and mask-folder data)."""
        return cls(names=tuple(names))

    @property
    def num_classes(self) -> int:
        """What Mask R-CNN calls ``num_classes``: the categories plus background."""
        return len(self.names) + 1

    def label(self, dataset_id: int) -> int:
        """Contiguous model label (1..K) for a data-set category id."""
        try:
            return self._label_of[int(dataset_id)]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(
                f"Unknown category id {dataset_id}; known ids: {list(self.dataset_ids)}."
            ) from None

    def dataset_id(self, label: int) -> int:
        """Data-set category id for a model label (1..K), for writing results files."""
        if not 1 <= int(label) <= len(self.names):
            raise KeyError(f"Label {label} is outside 1..{len(self.names)}.")
        return self.dataset_ids[int(label) - 1]

    def name(self, label: int) -> str:
        """Human-readable name of a model label; 0 is background."""
        return "background" if int(label) == 0 else self.names[int(label) - 1]

    def to_dict(self) -> dict[str, list]:
        """Plain data for checkpoints and configs (loadable with ``weights_only=True``)."""
        return {"names": list(self.names), "dataset_ids": list(self.dataset_ids)}

    @classmethod
    def from_dict(cls, data: dict) -> Categories:
        return cls(names=tuple(data["names"]), dataset_ids=tuple(data.get("dataset_ids", ())))
