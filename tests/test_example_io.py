"""examples/perceiver_io_by_hand.py (the Python example of docs/perceiver-io.md) runs on a tiny config and learns."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_perceiver_io_by_hand_runs_and_the_loss_falls():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "perceiver_io_by_hand.py"), "--tiny", "--steps", "40"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "PERCEIVER_DISABLE_PLUGINS": "1"},
    )
    assert result.returncode == 0, result.stderr
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", result.stdout)]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert "masked: The ________" in result.stdout and "filled: The " in result.stdout
