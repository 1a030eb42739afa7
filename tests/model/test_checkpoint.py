"""Checkpoints rebuild the model by themselves, and are read without running code from them."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from mrcnn.data.categories import Categories
from mrcnn.model.checkpoint import (
    CheckpointError,
    ClassesMismatchError,
    ensure_classes_match,
    load_module,
    read_checkpoint,
)


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_alone_rebuilds_model_and_classes(tiny_checkpoint):
    saved = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert isinstance(saved["hyper_parameters"]["categories"], dict)  # plain data
    module = load_module(tiny_checkpoint)
    assert module.categories.names == ("circle", "square", "triangle")
    state = module.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    for key, value in state.items():
        assert torch.equal(value, saved["state_dict"][key]), key


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle"])
def test_crafted_pickle_payload_is_refused_and_never_runs(tmp_path, tiny_checkpoint, how):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.ckpt"
    if how == "pickle":  # a bare pickle stream, not torch.save's format
        payload = {"state_dict": {}, "hyper_parameters": Payload(marker)}
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    else:  # a real checkpoint with one hyper-parameter replaced by the payload
        data = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
        data["hyper_parameters"]["backbone"]["name"] = Payload(marker)
        torch.save(data, evil, _use_new_zipfile_serialization=how == "zip")

    with pytest.raises(CheckpointError, match=r"Refused to load .*posix\.system"):
        load_module(evil)
    assert not marker.exists()

    # The payload is live: an unsafe load would have run it.
    control = tmp_path / "control-ran"
    torch.save({"x": Payload(control)}, tmp_path / "control.ckpt")
    torch.load(tmp_path / "control.ckpt", weights_only=False)
    assert control.exists()


def test_missing_file_says_where_checkpoints_are(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*checkpoints/"):
        load_module(tmp_path / "nope.ckpt")


def test_text_file_is_named_as_such(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is a text file"):
        read_checkpoint(path)


def test_bare_torchvision_state_dict_says_what_to_pass_instead(tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    path = tmp_path / "maskrcnn.pth"
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, path)
    with pytest.raises(CheckpointError, match=r"bare state dict.*backbone\.weights_path="):
        load_module(path)


def test_foreign_lightning_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="not an mrcnn one"):
        load_module(path)


def test_classes_mismatch_names_both_lists():
    trained = Categories.from_names(["circle", "square", "triangle"])
    ensure_classes_match(trained, Categories.from_names(["circle", "square", "triangle"]))
    with pytest.raises(ClassesMismatchError, match=r"only in checkpoint: 3:triangle.*3:star"):
        ensure_classes_match(trained, Categories.from_names(["circle", "square", "star"]))
    with pytest.raises(ClassesMismatchError, match="different order"):
        ensure_classes_match(
            trained, Categories(("square", "circle", "triangle"), dataset_ids=(2, 1, 3))
        )
