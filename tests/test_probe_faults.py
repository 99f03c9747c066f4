"""A scan never dies on a file: decoders that raise, and decoders that kill their process."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from curator.ingest.scan import ScanOptions, scan
from db.schema import File, Problem
from tests.corpus import FAULTS, fault_file, pattern, register_fault_decoder


def problems(catalog) -> dict[str, tuple[str, str]]:
    with catalog.session() as s:
        return {Path(p.path).name: (p.kind, p.message) for p in s.scalars(select(Problem))}


def catalogued(catalog) -> set[str]:
    with catalog.session() as s:
        return {Path(p).name for p in s.scalars(select(File.path).where(File.present))}


def write_faults(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in FAULTS:
        (root / f"{name}.png").write_bytes(fault_file(name))
    (root / "fine_plugin.png").write_bytes(fault_file("ok"))
    for i in range(3):
        pattern(32, 32, 300 + i).save(root / f"good{i}.png")


def test_every_exception_a_decoder_raises_becomes_a_problem(catalog, tmp_path):
    root = tmp_path / "faults"
    write_faults(root)
    summary = scan(catalog, [root], ScanOptions(workers=0, decoder_setup=register_fault_decoder))
    found = problems(catalog)
    assert {name: kind for name, (kind, _) in found.items()} == {
        f"{name}.png": kind for name, kind in FAULTS.items()
    }
    assert all(message and "\n" not in message for _, message in found.values())
    assert found["ValueError.png"][1] == "ValueError: point operation not supported for this mode"
    assert catalogued(catalog) == {"fine_plugin.png", "good0.png", "good1.png", "good2.png"}
    assert summary.problems == len(FAULTS) and summary.new_images == 4


def test_exceptions_in_worker_processes_too(catalog, tmp_path):
    root = tmp_path / "faults"
    write_faults(root)
    scan(catalog, [root], ScanOptions(workers=2, decoder_setup=register_fault_decoder))
    assert {name: kind for name, (kind, _) in problems(catalog).items()} == {
        f"{name}.png": kind for name, kind in FAULTS.items()
    }
    assert len(catalogued(catalog)) == 4


def decode_count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_decoder_that_kills_its_process_costs_only_that_file(catalog, tmp_path):
    root = tmp_path / "crashy"
    root.mkdir()
    logs = {}
    for behaviour in ("exit", "kill"):
        logs[behaviour] = tmp_path / f"{behaviour}.log"
        data = fault_file(behaviour, log=logs[behaviour])
        (root / f"{behaviour}.png").write_bytes(data)
    for i in range(40):
        pattern(24, 24, 400 + i).save(root / f"{i:02d}.png")
    options = ScanOptions(workers=2, decoder_setup=register_fault_decoder)
    summary = scan(catalog, [root], options)
    assert summary.new_images == 40
    assert summary.problem_kinds == {"crashed": 2}
    found = problems(catalog)
    assert found["exit.png"][0] == found["kill.png"][0] == "crashed"
    assert len(catalogued(catalog)) == 40
    tried = {b: decode_count(log) for b, log in logs.items()}
    assert all(n >= 1 for n in tried.values())

    # A file that crashed a worker is not tried again while it is unchanged...
    summary = scan(catalog, [root], options)
    assert summary.problem_kinds == {"crashed": 2} and summary.unchanged == 40
    assert {b: decode_count(log) for b, log in logs.items()} == tried

    # ...and is tried again once it changes.
    changed = root / "exit.png"
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    scan(catalog, [root], options)
    assert decode_count(logs["exit"]) == tried["exit"] + 1
    assert decode_count(logs["kill"]) == tried["kill"]
    assert problems(catalog)["exit.png"][0] == "crashed"


def test_a_failing_decoder_setup_is_one_clear_error(catalog, tmp_path):
    import pytest

    from curator.errors import UsageError

    def broken_setup() -> None:
        raise ImportError("No module named 'pillow_heif'")

    pattern(16, 16, 1).save(tmp_path / "a.png")
    with pytest.raises(UsageError, match="decoder setup failed: No module named"):
        scan(catalog, [tmp_path], ScanOptions(workers=0, decoder_setup=broken_setup))


def test_decoder_warnings_stay_off_the_terminal(catalog, tmp_path, capfd):
    from curator.catalog.problems import list_problems
    from tests.corpus import PALETTE_WARNING

    root = tmp_path / "warns"
    root.mkdir()
    (root / "warns.png").write_bytes(fault_file("warn"))
    pattern(16, 16, 1).save(root / "quiet.png")
    for workers in (0, 2):
        scan(catalog, [root], ScanOptions(workers=workers, decoder_setup=register_fault_decoder))
        out, err = capfd.readouterr()
        assert "Palette" not in out + err
        listed = list_problems(catalog, warnings=True)
        assert [(Path(e.path).name, e.kind, e.message) for e in listed] == [
            ("warns.png", "warning", PALETTE_WARNING)
        ]
        with catalog.session() as s:  # start over: the next pass must decode again
            s.execute(File.__table__.delete())
            s.commit()


def test_several_crashes_in_one_scan(catalog, tmp_path):
    root = tmp_path / "crashy"
    root.mkdir()
    for i in range(40):
        pattern(16, 16, 600 + i).save(root / f"{i:02d}.png")
        if i % 10 == 3:
            behaviour = "kill" if i % 2 else "exit"
            (root / f"{i:02d}_crash.png").write_bytes(fault_file(behaviour))
    summary = scan(catalog, [root], ScanOptions(workers=2, decoder_setup=register_fault_decoder))
    assert summary.new_images == 40
    assert summary.problem_kinds == {"crashed": 4}
    assert set(problems(catalog)) == {f"{i}_crash.png" for i in ("03", "13", "23", "33")}
