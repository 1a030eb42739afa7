"""Progress that a log file shows: `python -m mrcnn.train > file` still reports every N steps."""

import re
import subprocess
import sys

import pytest

from tests.tiny import TINY_DATA

PROGRESS = re.compile(
    r"step (\d+)/6 \(\d+%\) \| loss [\d.]+ \| loss_classifier [\d.]+ \| loss_box_reg [\d.]+ "
    r"\| loss_mask [\d.]+ \| loss_objectness [\d.]+ \| loss_rpn_box_reg [\d.]+ \| lr [\d.e-]+ "
    r"\| [\d.]+ s/step \| ETA \d+m\d\ds"
)


# slow: 41 s alone (a real run with its output piped); the default suite stays under 15 min
@pytest.mark.slow
def test_redirected_stdout_and_train_log_get_progress_lines(tmp_path):
    stdout = tmp_path / "run.log"
    with stdout.open("w") as sink:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mrcnn.train",
                *TINY_DATA,
                "trainer.max_steps=6",
                "trainer.val_check_interval=3",
                "callbacks.progress_log.every_n_steps=2",
                "hydra.run.dir=run",
            ],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    printed = stdout.read_text()
    assert done.returncode == 0, printed[-3000:]
    for text in (printed, (tmp_path / "run" / "train.log").read_text()):
        assert [int(m) for m in PROGRESS.findall(text)] == [2, 4, 6], text[-3000:]
        assert re.search(r"validation at step 3: segm_AP [\d.]+ \| segm_AP50 [\d.]+", text)
        assert "validation at step 6:" in text
    assert "\r" not in printed, "no progress bar redrawn into a file"
