"""How fast `curator` starts: `--help`, `stats` and `ls` on a small catalog.

    python benchmarks/startup.py             # 7 runs of each, median wall time
    python benchmarks/startup.py --runs 15

Each command runs as a fresh process, the way a person or a script starts it. The
interpreter's own start (`python -c pass`) is printed as the floor, and each command
as seconds and as a multiple of that floor. "catalog floor" is importing SQLAlchemy
and the schema, which any command that opens a catalog needs; "eager" is importing
every command module, what each start cost before command modules loaded on demand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5  # `curator --help` and `curator stats` on a small catalog


def timed(args: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall seconds, and median CPU seconds (user + system: steadier on a busy
    machine, where waiting for a core inflates wall time)."""
    walls, cpus = [], []
    for _ in range(runs):
        before = _children_cpu()
        start = time.perf_counter()
        subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - before)
    return statistics.median(walls), statistics.median(cpus)


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # not POSIX: wall time only
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="Runs per command (median).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "catalog.db"
        shutil.copytree(ROOT / "samples", Path(tmp) / "samples")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CURATOR_DB": str(db)}
        # Bytecode is written as on any installed copy; the scan below and a first
        # run of each command fill the cache, so every timed start reads it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cli = [sys.executable, "-m", "curator.cli"]
        subprocess.run(
            [*cli, "scan", str(Path(tmp) / "samples"), "--quiet"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for warm in (["--help"], ["stats"], ["ls"]):
            subprocess.run([*cli, *warm], env=env, check=True, stdout=subprocess.DEVNULL)
        floor = timed([sys.executable, "-c", "pass"], env, args.runs)
        rows = [
            ("python -c pass (floor)", floor),
            ("curator --help", timed([*cli, "--help"], env, args.runs)),
            ("curator stats", timed([*cli, "stats"], env, args.runs)),
            ("curator ls", timed([*cli, "ls"], env, args.runs)),
            (
                "import sqlalchemy (library floor)",
                timed([sys.executable, "-c", "import sqlalchemy.orm"], env, args.runs),
            ),
            (
                "import db.schema (catalog floor)",
                timed([sys.executable, "-c", "import db, db.schema"], env, args.runs),
            ),
            (
                "eager: import every command module",
                timed(
                    [
                        sys.executable,
                        "-c",
                        "from curator.cli import main; main.load_all()",
                    ],
                    env,
                    args.runs,
                ),
            ),
        ]
    print(f"median of {args.runs} runs, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    floor_wall, floor_cpu = floor
    print(f"{'':<38} {'wall':>8} {'x floor':>8} {'cpu':>8} {'x floor':>8}")
    for name, (wall, cpu) in rows:
        mark = ""
        if name in ("curator --help", "curator stats"):
            mark = "  ok" if wall < TARGET_S else f"  wall over {TARGET_S} s"
        print(
            f"{name:<38} {wall:7.3f}s {wall / floor_wall:7.1f}x "
            f"{cpu:7.3f}s {cpu / floor_cpu if floor_cpu else float('nan'):7.1f}x{mark}"
        )
    help_s, eager_s = rows[1][1][0], rows[-1][1][0]
    print(f"--help is {eager_s / help_s:.1f}x faster than importing every command module")


if __name__ == "__main__":
    main()
