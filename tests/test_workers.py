"""Worker processes never outlive the process that started them (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from curator.workers import process_pool

    if __name__ == "__main__":
        pool = process_pool(2)
        pids = set()
        while len(pids) < 2:  # one slow task per worker, each reporting its pid
            pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(8)]}
        for _ in range(2):
            pool.submit(time.sleep, 600)
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it only waits for its parent to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _helpers_of(folder: Path) -> list[int]:
    """Processes (fork server, resource tracker) whose command line names ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(folder).encode() in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "workers outlived their parent"
        while _helpers_of(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _helpers_of(tmp_path) == [], "the fork server outlived its workers"
    finally:
        if parent.poll() is None:
            parent.kill()
