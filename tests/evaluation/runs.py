"""Overrides for the evaluation tests' real runs (built on tests/tiny.py)."""

from tests.tiny import TINY

# A 2-step run with these overrides writes the checkpoint the evaluate tests use.
CHECKPOINT_RUN = [*TINY, "logger=none", "trainer.max_steps=2", "trainer.limit_val_batches=0"]
# The same small synthetic validation set, for `python -m mrcnn.evaluate`.
EVAL_DATA = [o for o in TINY if o.startswith("data.")]
