"""Data set wrappers: transforms on top of a data set, and the way back to the data set beneath."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from mrcnn.data.transforms import to_model_input


@contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """Seeds torch's CPU generator and Python's ``random`` (what augmentations draw from) inside,
    and gives both back their state after, so the caller's random stream is untouched."""
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


class TransformedDataset(Dataset):
    """Applies a v2 pipeline to a data set's samples and hands the model plain tensors.

    An item is asked for by index, or by ``(index, seed)`` (what the training batch samplers
    in :mod:`mrcnn.data.sampler` yield): then the augmentation draws from that seed alone, so
    it is the same whatever the number of workers, and after a resume.
    """

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        if isinstance(key, tuple):
            index, seed = key
            with seeded_random(seed):
                return self._sample(index)
        return self._sample(key)

    def _sample(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.dataset[index]
        kept_before = len(target["labels"])
        image, target = self.transform(image, target)
        image, target = to_model_input(image, target)
        # Instances an augmentation made degenerate (or copy-paste hid) count as dropped, like
        # invalid ones; pasted instances are new, not kept ones.
        kept_before += target.pop("num_pasted", 0)
        target["num_dropped"] = target.get("num_dropped", 0) + kept_before - len(target["labels"])
        return image, target


class CompactSubset(Subset):
    """A ``Subset`` whose indices are one numpy array instead of a list of Python ints.

    Data loader workers read a random index per item; from a list, that touches (and, through
    the reference count, copies) the page holding each int object, so every worker's private
    memory grows over an epoch (copy-on-read; see ``benchmarks/scale.py``). ``indices`` still
    reads as a list of ints.
    """

    def __init__(self, dataset: Dataset, indices: Any) -> None:  # no super(): no list kept
        self.dataset = dataset
        self._indices = np.asarray(indices, dtype=np.int64).reshape(-1)

    @property
    def indices(self) -> list[int]:
        return self._indices.tolist()

    def __getitem__(self, index: int | list[int]) -> Any:
        if isinstance(index, list):
            return [self.dataset[int(self._indices[i])] for i in index]
        return self.dataset[int(self._indices[index])]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        return [self.dataset[int(self._indices[i])] for i in indices]

    def __len__(self) -> int:
        return len(self._indices)


def unwrap_dataset(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The data set under ``Subset`` / :class:`TransformedDataset` wrappers, and the indices
    into it of the wrapper's items, in order.

    What needs the original samples or their metadata goes through here: evaluation ground
    truth (never augmented) and aspect-ratio grouping (sizes without decoding images).
    """
    indices: list[int] | None = None
    while True:
        if isinstance(dataset, Subset):
            inner = [int(i) for i in dataset.indices]
            indices = inner if indices is None else [inner[i] for i in indices]
            dataset = dataset.dataset
        elif isinstance(dataset, TransformedDataset):
            dataset = dataset.dataset
        else:
            break
    if indices is None:
        indices = list(range(len(dataset)))  # type: ignore[arg-type]
    return dataset, indices
