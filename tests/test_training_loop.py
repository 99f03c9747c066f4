"""What every training method shares, on the tiny pipeline: gradient accumulation, exact
resume from a saved state, samples catalogued with infotext, min-SNR and noise offset,
mixed precision, the progress bar's loss, and one-line errors for what cannot run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from curator.cli import main  # noqa: E402
from curator.errors import Cancelled  # noqa: E402
from curator.progress import CancelToken, NullReporter  # noqa: E402
from curator.training.dreambooth import DreamBoothOptions, train_dreambooth  # noqa: E402
from curator.training.lora import LoraOptions, train_lora  # noqa: E402
from curator.training.textual_inversion import (  # noqa: E402
    TextualInversionOptions,
    train_textual_inversion,
)
from tests.test_training import make_data  # noqa: E402


def _log(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()[1:]]


METHODS = {
    "lora": (LoraOptions, train_lora, {"rank": 2, "lr": 1e-3}, "lora"),
    "textual-inversion": (
        TextualInversionOptions,
        train_textual_inversion,
        {"token": "skstok", "lr": 5e-2},
        "skstok",
    ),
    "dreambooth": (DreamBoothOptions, train_dreambooth, {"lr": 1e-4}, "dreambooth"),
}


def test_gradient_accumulation_counts_optimizer_steps(tiny_dir, tmp_path):
    from safetensors import safe_open

    data = make_data(tmp_path / "d", [(32, 32)] * 2)
    options = LoraOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "o"), steps=3, rank=2,
        device="cpu", gradient_accumulation_steps=2,
    )  # fmt: skip
    result = train_lora(options)
    rows = _log(result.loss_log)
    # three optimizer steps, each of two batches: one epoch of the two images per step
    assert [r[0] for r in rows] == ["1", "2", "3"] and [r[1] for r in rows] == ["1", "2", "3"]
    assert result.steps == 3 and len(result.losses) == 3
    with safe_open(str(result.outputs[-1]), "pt") as f:
        meta = f.metadata()
    assert (meta["ss_steps"], meta["ss_gradient_accumulation_steps"]) == ("3", "2")
    assert meta["ss_total_batch_size"] == "2"
    plain = train_lora(LoraOptions(**{**options.__dict__, "gradient_accumulation_steps": 1}))
    assert plain.losses != result.losses


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_resume_from_a_saved_state_continues_the_steps_exactly(tiny_dir, tmp_path, kind):
    cls, train, extra, name = METHODS[kind]
    data = make_data(tmp_path / "d", [(32, 32)] * 3)
    common = {"base": str(tiny_dir), "data": str(data), "device": "cpu", "steps": 4, **extra}
    whole = train(cls(**common, out=str(tmp_path / "whole")))

    token = CancelToken()

    class CancelAfterTwo(NullReporter):
        done = 0

        def advance(self, n: int = 1) -> None:
            self.done += n
            if self.done == 2:
                token.cancel()

    out = tmp_path / "o"
    first = cls(**common, out=str(out), save_state=True, reporter=CancelAfterTwo(), cancel=token)
    with pytest.raises(Cancelled, match="step 2"):
        train(first)
    state = out / f"{name}-000002-state"
    assert (state / "training_state.pt").is_file()
    resumed = train(cls(**common, out=str(out), resume=str(state)))
    assert resumed.losses == pytest.approx(whole.losses[2:], rel=1e-5)
    assert [r[0] for r in _log(resumed.loss_log)] == ["1", "2", "3", "4"]
    assert [float(r[2]) for r in _log(resumed.loss_log)] == pytest.approx(whole.losses, rel=1e-4)


def test_resume_refuses_a_state_of_another_method_or_past_the_end(tiny_dir, tmp_path):
    data = make_data(tmp_path / "d", [(32, 32)])
    common = {"base": str(tiny_dir), "data": str(data), "device": "cpu", "rank": 2}
    train_lora(LoraOptions(**common, out=str(tmp_path / "o"), steps=2, save_state=True))
    state = str(tmp_path / "o" / "lora-state")
    with pytest.raises(Exception, match="--steps must be more than that"):
        train_lora(LoraOptions(**common, out=str(tmp_path / "o"), steps=2, resume=state))
    options = TextualInversionOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "t"), device="cpu",
        token="skstok", steps=3, resume=state,
    )  # fmt: skip
    with pytest.raises(Exception, match="is a lora state, not textual-inversion"):
        train_textual_inversion(options)


def test_samples_are_generated_on_schedule_with_infotext_and_catalogued(tiny_dir, tmp_path):
    from sqlalchemy import select

    from db import open_catalog
    from db.schema import File, GeneratedBy, Run

    catalog = open_catalog(str(tmp_path / "c.db"))
    options = LoraOptions(
        base=str(tiny_dir), data=str(make_data(tmp_path / "d", [(32, 32)])),
        out=str(tmp_path / "o"), steps=2, rank=2, device="cpu", sample_every=1,
        sample_prompts=["a cat", "a dog, (sks:1.2)"], sample_steps=2, sample_size=(32, 24),
    )  # fmt: skip
    result = train_lora(options, catalog)
    assert len(result.samples) == 4 and {p.parent for p in result.samples} == {
        tmp_path / "o" / "samples"
    }
    texts = []
    for path in result.samples:
        with Image.open(path) as image:
            assert image.size == (32, 24)
            texts.append(image.info["parameters"])
    assert texts[0].startswith("a cat\n") and "Model: lora-000001" in texts[0]
    assert texts[1].startswith("a dog, (sks:1.2)\n") and "Seed: 1," in texts[1]
    assert "Model: lora-000002" in texts[3] and "Steps: 2" in texts[3]
    with catalog.session() as session:
        rows = session.scalars(select(GeneratedBy)).all()
        assert len(rows) == 4
        assert {r.params["prompt"] for r in rows} == {"a cat", "a dog, (sks:1.2)"}
        paths = set(session.scalars(select(File.path)))
        assert {str(p) for p in result.samples} <= paths
        run = session.scalars(select(Run).where(Run.kind == "train")).one()
        assert run.counts["samples"] == [str(p) for p in result.samples]
    catalog.close()


def test_min_snr_weights_and_noise_offset():
    import torch
    from diffusers import DDPMScheduler

    from curator.training.objective import snr_weights

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    steps = torch.tensor([0, 100, 500, 999])
    alphas = scheduler.alphas_cumprod[steps]
    snr = alphas / (1 - alphas)
    weights = snr_weights(scheduler, steps, 5.0)
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / snr)
    assert weights[0] < 0.01 and weights[-1] == 1.0  # only the easy, low-noise steps shrink
    v = DDPMScheduler.from_config(scheduler.config, prediction_type="v_prediction")
    assert torch.allclose(snr_weights(v, steps, 5.0), torch.clamp(snr, max=5.0) / (snr + 1))


def test_min_snr_noise_offset_bf16_and_checkpointing_train(tiny_dir, tmp_path):
    import math

    data = make_data(tmp_path / "d", [(32, 32)] * 2)
    common = {"base": str(tiny_dir), "data": str(data), "device": "cpu", "steps": 3, "lr": 1e-2}
    plain = train_dreambooth(
        DreamBoothOptions(**common, out=str(tmp_path / "a"), train_text_encoder=True)
    )
    checkpointed = train_dreambooth(
        DreamBoothOptions(
            **common, out=str(tmp_path / "b"), gradient_checkpointing=True,
            train_text_encoder=True,
        )
    )  # fmt: skip
    unet_only = train_dreambooth(DreamBoothOptions(**common, out=str(tmp_path / "u")))
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-4)  # same maths
    assert unet_only.losses[-1] != pytest.approx(plain.losses[-1], rel=1e-4)  # the encoder learnt
    shaped = train_dreambooth(
        DreamBoothOptions(
            **common, out=str(tmp_path / "c"), min_snr_gamma=5.0, noise_offset=0.1,
            mixed_precision="bf16",
        )
    )  # fmt: skip
    assert all(math.isfinite(v) for v in shaped.losses) and shaped.losses != plain.losses


def test_progress_shows_the_loss_and_counts_steps(tiny_dir, tmp_path):
    seen: list[tuple[str, str | None]] = []

    class Recorder(NullReporter):
        def describe(self, text: str, unit: str | None = None) -> None:
            seen.append((text, unit))

    options = LoraOptions(
        base=str(tiny_dir), data=str(make_data(tmp_path / "d", [(32, 32)])),
        out=str(tmp_path / "o"), steps=3, rank=2, device="cpu", reporter=Recorder(),
    )  # fmt: skip
    result = train_lora(options)
    assert len(seen) == 3 and all(unit == "it" for _, unit in seen)
    assert seen[0][0] == f"train lora · loss {result.losses[0]:.4f}"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="no tensorboard")
def test_tensorboard_log_when_installed(tiny_dir, tmp_path):
    options = LoraOptions(
        base=str(tiny_dir), data=str(make_data(tmp_path / "d", [(32, 32)])),
        out=str(tmp_path / "o"), steps=2, rank=2, device="cpu",
    )  # fmt: skip
    train_lora(options)
    assert list((tmp_path / "o" / "logs" / "lora").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mixed-precision", "fp16"], "--mixed-precision fp16 needs a CUDA GPU"),
        (["--sample-every", "5"], "--sample-every needs at least one --sample-prompt"),
        (["--resume", "{tmp}/nothing"], "no such state to resume from"),
        (["--sample-size", "30"], "multiples of 8"),
    ]
    + (
        [(["--optimizer", "adamw8bit"], "needs bitsandbytes: pip install bitsandbytes")]
        if importlib.util.find_spec("bitsandbytes") is None
        else []
    ),
)
def test_options_that_cannot_run_are_one_line(tiny_dir, tmp_path, extra, message):
    data = make_data(tmp_path / "d", [(32, 32)])
    extra = [e.format(tmp=tmp_path) for e in extra]
    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "c.db"), "train", "lora", "--base", str(tiny_dir),
         "--data", str(data), "--out", str(tmp_path / "o"), "--device", "cpu", *extra],
    )  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(("error: ", "Error: ")) and (
        len(lines) == 1 or "Usage:" in result.output
    )
