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


def _bash_blocks(text: str) -> list[list[str]]:
    return [
        [line for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
    ]


def test_ci_runs_exactly_the_readmes_two_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart")[1].split("##")[0]
    tests = readme.split("## Tests")[1].split("##")[0]
    [[install_and_run], *_] = _bash_blocks(quickstart)
    [[install_and_test]] = _bash_blocks(tests)
    assert install_and_run.startswith('pip install -e ".[cpu]" && curator prepare samples/')
    assert install_and_test == 'pip install -e ".[all]" && python -m pytest -q'
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci[:3] == [install_and_run, "curator stats", install_and_test]
    assert ci[3:] == [".ci/postgres"]  # then the catalog tests on a PostgreSQL server


def test_the_quickstart_install_pulls_no_torch():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    light = project["dependencies"] + project["optional-dependencies"]["cpu"]
    heavy = ("torch", "torchvision", "open_clip", "diffusers", "transformers", "nvidia")
    assert not [d for d in light if d.lower().startswith(heavy)]
