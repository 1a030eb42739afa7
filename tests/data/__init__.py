"""Data-set tests; helpers: ``tests.data.tmp_data`` and ``tests.data.converters``."""
