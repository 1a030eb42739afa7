"""``python -m mrcnn <command>``: the ``mrcnn`` command (:mod:`mrcnn.cli`)."""

from mrcnn.cli import main

main()
