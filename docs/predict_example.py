"""Make docs/deploy.md's predict picture: ``python docs/predict_example.py CHECKPOINT``.

Writes the first six images of the default validation set (the synthetic shapes, seed 1) as
PNGs, runs ``mrcnn predict`` on them as a user would, and tiles the drawn outputs,
scaled up 2x (nearest neighbour) so that 128 px images stay legible, into
``docs/images/predict_example.png``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from hydra.utils import instantiate
from PIL import Image

from mrcnn.config import compose_config

OUT = Path(__file__).resolve().parent / "images" / "predict_example.png"
COUNT, COLUMNS, SCALE, GAP = 6, 3, 2, 6


def main(checkpoint: str) -> None:
    shapes = instantiate(compose_config().data.val)  # the default run's validation set
    with tempfile.TemporaryDirectory() as tmp:
        images, drawn = Path(tmp) / "images", Path(tmp) / "predicted"
        images.mkdir()
        for index in range(COUNT):
            pixels = shapes[index][0].permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(images / f"val_{index}.png")
        command = [
            sys.executable, "-m", "mrcnn", "predict", f"model={checkpoint}",
            f"input={images}", f"output={drawn}", "evaluation.score_threshold=0.5",
        ]  # fmt: skip
        print(" ".join(command[1:]))
        subprocess.run(command, check=True)
        panels = [Image.open(drawn / f"val_{index}.png").convert("RGB") for index in range(COUNT)]
    cell = max(p.width for p in panels) * SCALE, max(p.height for p in panels) * SCALE
    rows = -(-COUNT // COLUMNS)
    canvas = Image.new(
        "RGB",
        (COLUMNS * cell[0] + (COLUMNS - 1) * GAP, rows * cell[1] + (rows - 1) * GAP),
        "white",
    )
    for index, panel in enumerate(panels):
        big = panel.resize((panel.width * SCALE, panel.height * SCALE), Image.NEAREST)
        row, column = divmod(index, COLUMNS)
        canvas.paste(big, (column * (cell[0] + GAP), row * (cell[1] + GAP)))
    canvas.save(OUT)
    print(f"Wrote {OUT} ({canvas.width}x{canvas.height})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    main(sys.argv[1])
