"""Training in two processes on the CPU (gloo), started by `accelerate launch` as on
several GPUs: each process trains on its own share of the batches, one writes."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from tests.fixtures.tiny_pipeline import save_tiny_pipeline  # noqa: E402
from tests.test_training import make_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # torch at one thread in each process
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",  # gloo on the CPU, with or without GPUs here
    }
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "curator.cli",
    ]  # fmt: skip
    return subprocess.run(
        [*launch, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_two_processes_train_on_different_images_and_one_writes(tmp_path):
    import torch
    from safetensors.torch import load_file

    from db import open_catalog
    from db.schema import Run

    torch.set_num_threads(1)
    tiny = save_tiny_pipeline(tmp_path / "tiny")
    data = make_data(tmp_path / "d", [(32, 32)] * 4)
    open_catalog(str(tmp_path / "c.db")).close()  # created once, before two processes open it
    out = tmp_path / "o"
    done = _launch(
        ["--db", str(tmp_path / "c.db"), "train", "lora", "--base", str(tiny),
         "--data", str(data), "--out", str(out), "--steps", "2", "--rank", "2",
         "--save-state", "--json"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"outputs"') == 1  # one report, from the main process

    tensors = load_file(out / "lora.safetensors")
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_up.weight") for k in tensors)
    ups = [v for k, v in tensors.items() if k.endswith(".lora_up.weight")]
    assert any(float(v.abs().sum()) > 0 for v in ups)  # zero-initialised, so it trained
    assert (out / "lora-state").is_dir()

    with open(out / "lora-loss.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2"]
    shares = [[part.split() for part in r["images"].split(" | ")] for r in rows]
    assert all(len(s) == 2 and s[0] != s[1] for s in shares)  # each process its own batch
    first_epoch = [name for s in shares for part in s for name in part]
    assert sorted(first_epoch) == ["000.png", "001.png", "002.png", "003.png"]

    catalog = open_catalog(str(tmp_path / "c.db"))
    with catalog.session() as session:
        runs = session.query(Run).filter_by(kind="train").all()
        assert len(runs) == 1 and runs[0].status == "finished"
        assert runs[0].params["processes"] == 2
        assert runs[0].counts["steps"] == 2
    catalog.close()

    resumed = _launch(
        ["--db", str(tmp_path / "c.db"), "train", "lora", "--base", str(tiny),
         "--data", str(data), "--out", str(out),
         "--steps", "4", "--rank", "2", "--resume", str(out / "lora-state"), "--quiet"],
        tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(out / "lora-loss.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]  # continues from step 2
    second_epoch = [n for r in rows[2:4] for part in r["images"].split(" | ") for n in part.split()]
    assert sorted(second_epoch) == ["000.png", "001.png", "002.png", "003.png"]
