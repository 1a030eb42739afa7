"""Tests of mrcnn.visualize: drawing instances, marking errors, plots."""
