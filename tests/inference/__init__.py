"""Tests of mrcnn.inference: the one inference path, tiling, loading a model from its file."""
