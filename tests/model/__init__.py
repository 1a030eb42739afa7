"""Tests of mrcnn.model: the builder, the LightningModule, forward passes, checkpoints,
schedules."""
