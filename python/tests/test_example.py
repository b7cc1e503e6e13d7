"""The README's example runs, and makes its plot."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "analysis.py"


def test_the_example_writes_its_png(tmp_path):
    png = tmp_path / "revenue.png"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(EXAMPLE.parent / "sales.csv"), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "summary:" in done.stdout and "north" in done.stdout
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
