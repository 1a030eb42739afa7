"""Tests of the packaged configs (mrcnn/conf): presets and experiments as users run them."""
