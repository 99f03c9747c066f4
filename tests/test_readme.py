"""The README's Python example runs as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(from db import open_catalog.*?)```", readme, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "0"]  # four new images, no problems
    written = sorted(p.name for p in (tmp_path / "train" / "train").iterdir())
    assert written == [
        "astronaut.png",
        "cat_generated.png",
        "chelsea.png",
        "coffee.png",
        "metadata.jsonl",
    ]
