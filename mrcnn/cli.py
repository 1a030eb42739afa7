"""``mrcnn <command> [overrides]``: one command for train, evaluate, predict, export and check.

Each command is its own Hydra app (``mrcnn train --help`` lists its config groups and keys;
``-m``, ``--cfg job``, ``--config-dir`` work as in Hydra), and runs as ``python -m <module>`` would:
the module becomes ``__main__`` (:func:`runpy.run_module`), so that the processes Lightning starts
for the other DDP ranks run the same command again.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence

import mrcnn

COMMANDS = {
    "train": ("mrcnn.train", "train Mask R-CNN (built-in synthetic shapes by default)"),
    "evaluate": ("mrcnn.evaluate", "COCO box and mask AP of a model or a results file"),
    "predict": ("mrcnn.predict", "detections for images: drawn PNGs and COCO json"),
    "export": ("mrcnn.export", "a checkpoint as ONNX or TorchScript, with its sidecar json"),
    "check": ("mrcnn.data.check", "is this data set ready to train on? counts and problems"),
}


def usage() -> str:
    """What ``mrcnn --help`` prints."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: mrcnn <command> [key=value ...] [Hydra options]",
        "",
        "Train, evaluate and deploy torchvision's Mask R-CNN (Lightning + Hydra).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()),
        "",
        "  mrcnn <command> --help         that command's config groups and keys",
        "  mrcnn <command> --cfg job      the composed config, without running",
        "  mrcnn <command> --config-dir DIR ...   your own configs (DIR/data/mine.yaml: data=mine)",
        "  mrcnn --version",
        "",
        "Examples:",
        "  mrcnn train",
        "  mrcnn train backbone=resnet50 data=coco data.root=path/to/coco",
        "  mrcnn evaluate model=outputs/2026-12-06/10-00-00/checkpoints/last.ckpt",
        "  mrcnn predict model=model.onnx input=images/ output=predictions/",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``mrcnn``: dispatch to a command (see module doc).

    A reader that stops early (``mrcnn train --help | head``) ends the command quietly, as it
    ends ``ls``, instead of with a BrokenPipeError traceback from flushing standard output.
    """
    try:
        try:
            dispatch(list(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # here, not at exit, where the error could not be caught
    except BrokenPipeError:
        # What Python's signal docs advise: no more writes to the closed pipe, then exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def dispatch(args: list[str]) -> None:
    """Run the command ``args[0]`` with the rest of ``args``, or print the usage or version."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if args[0] in ("-V", "--version"):
        print(f"mrcnn {mrcnn.__version__}")
        return
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"mrcnn: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)} "
            "(mrcnn --help).",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.argv = [f"mrcnn {name}", *rest]
    runpy.run_module(COMMANDS[name][0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
