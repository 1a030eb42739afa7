"""Lightning callbacks: every side concern of a training run, each in its own small class.

The LightningModule is the model, its losses and its optimizer; what happens around it lives
here. The configs name some (``conf/callbacks/``: checkpoints, the progress log); the runner adds
the ones a run is not correct without (:func:`mrcnn.builders.build_trainer`): the resume state,
the stop on a signal, the validation RNG guard, the empty-epoch check, validation metrics and
image panels.
"""

from mrcnn.callbacks.checkpoint import ModelCheckpoint, RunState, saved_overrides
from mrcnn.callbacks.memory_format import ChannelsLast
from mrcnn.callbacks.progress import ProgressLog, stdout_is_terminal
from mrcnn.callbacks.signals import StopOnSignal, is_stop, stops_reported
from mrcnn.callbacks.training import EmptyEpochCheck
from mrcnn.callbacks.validation import (
    CocoMetrics,
    ImagePanels,
    ValidatedStep,
    ValidationRandomStateGuard,
    validated_step,
)

__all__ = [
    "ChannelsLast",
    "CocoMetrics",
    "EmptyEpochCheck",
    "ImagePanels",
    "ModelCheckpoint",
    "ProgressLog",
    "RunState",
    "StopOnSignal",
    "ValidatedStep",
    "ValidationRandomStateGuard",
    "is_stop",
    "saved_overrides",
    "stdout_is_terminal",
    "stops_reported",
    "validated_step",
]
