"""Evaluation tests; helpers: ``tests.evaluation.coco_fakes`` and ``tests.evaluation.runs``."""
