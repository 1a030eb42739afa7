"""Overrides that make a real training run take seconds on a 2-core CPU (shared by the tests)."""

# Any data set: a few steps, one validation, quiet.
TINY_RUN = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "evaluation.image_panels=2",
]
# The synthetic set: few, small images.
TINY_DATA = [
    "data.num_workers=0",
    "data.train.num_images=8",
    "data.val.num_images=2",
    "data.image_size=128",
    "data.max_image_size=128",
    "data.batch_size=2",
]
TINY = TINY_DATA + TINY_RUN
