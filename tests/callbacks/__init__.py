"""Tests of mrcnn.callbacks."""
