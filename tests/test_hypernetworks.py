"""Hypernetworks as A1111 builds, saves, applies and trains them: layer rules, file format,
`<hypernet:NAME:STRENGTH>` in prompts, infotext, regenerate, X/Y/Z axes and training."""

from __future__ import annotations

import json
import pickletools
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from curator.cli import main  # noqa: E402
from curator.errors import UsageError  # noqa: E402
from curator.generation.generate import GenerationParams, generate  # noqa: E402
from curator.generation.hypernetworks import (  # noqa: E402
    HypernetworkError,
    Structure,
    build_mlp,
    create_hypernetwork,
    default_dropout_structure,
    initialize,
    load_hypernetwork,
    prompt_with_hypernet,
)
from curator.generation.loading import load_pipeline  # noqa: E402
from curator.training.hypernetwork import (  # noqa: E402
    HypernetworkOptions,
    context_widths,
    learn_rates,
    train_hypernetwork,
)
from curator.training.textual_inversion import write_restricted_pt  # noqa: E402
from tests.test_training import _fixed_loss, make_data  # noqa: E402


def _layers(mlp) -> list[str]:
    return [
        type(m).__name__ + (f"({m.p})" if isinstance(m, torch.nn.Dropout) else "")
        for m in mlp.linear
    ]


def _params(**changes) -> GenerationParams:
    base = {"prompt": "a cat", "steps": 3, "width": 32, "height": 32, "seed": 5}
    return GenerationParams(**{**base, **changes})


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _save_network(folder: Path, name: str, sizes, **structure) -> Path:
    torch.manual_seed(3)
    settings = {"layer_structure": [1, 2, 1], "activation": "relu", "weight_init": "XavierNormal"}
    network = create_hypernetwork(name, sizes, Structure(**{**settings, **structure}))
    path = folder / f"{name}.pt"
    write_restricted_pt(path, network.to_a1111())
    return path


# --- how A1111 builds the MLPs --------------------------------------------------------


@pytest.mark.parametrize(
    ("structure", "expected"),
    [
        (Structure([1, 2, 1], "relu"), ["Linear", "ReLU", "Linear"]),
        (Structure([1, 2, 1], "relu", activate_output=True), ["Linear", "ReLU", "Linear", "ReLU"]),
        (Structure([1, 2, 1], "linear", activate_output=True), ["Linear", "Linear"]),
        (Structure([1, 2, 1], None, True), ["Linear", "LayerNorm", "Linear", "LayerNorm"]),
        (  # A1111's "swish" is torch's Hardswish
            Structure([1, 1.5, 1.5, 1], "swish", True, dropout_structure=[0, 0.3, 0.1, 0]),
            ["Linear", "Hardswish", "LayerNorm", "Dropout(0.3)", "Linear", "Hardswish",
             "LayerNorm", "Dropout(0.1)", "Linear", "LayerNorm"],
        ),
        (Structure([1, 2, 2, 1], "mish"), ["Linear", "Mish", "Linear", "Mish", "Linear"]),
        (Structure([1, 2, 1], "gelu"), ["Linear", "GELU", "Linear"]),
        (Structure([1, 2, 1], "leakyrelu"), ["Linear", "LeakyReLU", "Linear"]),
    ],
)  # fmt: skip
def test_mlp_layers_follow_a1111s_rules(structure, expected):
    structure.check()
    mlp = build_mlp(320, structure)
    assert _layers(mlp) == expected
    widths = [m.out_features for m in mlp.linear if isinstance(m, torch.nn.Linear)]
    assert widths == [int(320 * w) for w in structure.layer_structure[1:]]


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        (Structure([2, 1]), "start and end with 1"),
        (Structure([1, 2, 1], "nope"), "unknown activation 'nope'"),
        (Structure([1, 2, 1], dropout_structure=[0, 1.5, 0]), "values in"),
        (Structure([1, 2, 1], dropout_structure=[0, 0.3]), "one value per layer"),
        (Structure([1, 2, 1], weight_init="Uniform"), "XavierUniform"),
    ],
)
def test_bad_structures_are_one_line_errors(structure, message):
    with pytest.raises(HypernetworkError, match=re.escape(message)):
        structure.check()


def test_dropout_of_files_that_only_say_use_dropout():
    assert default_dropout_structure([1, 2, 2, 1], True, False) == [0, 0.3, 0, 0]
    assert default_dropout_structure([1, 2, 2, 1], True, True) == [0, 0.3, 0.3, 0]
    assert default_dropout_structure([1, 2, 1], True, True) == [0, 0.3, 0]
    assert default_dropout_structure([1, 2, 2, 1], False, True) == [0, 0, 0, 0]


def test_initializations_as_a1111_names_them():
    torch.manual_seed(0)
    for init in ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal"):
        structure = Structure([1, 2, 1], "relu", layer_norm=True, weight_init=init)
        mlp = build_mlp(64, structure)
        initialize(mlp, structure)
        linear = [m for m in mlp.linear if isinstance(m, torch.nn.Linear)]
        norms = [m for m in mlp.linear if isinstance(m, torch.nn.LayerNorm)]
        assert all(float(m.bias.detach().abs().max()) == 0 for m in linear + norms)
        # LayerNorm weights start small whatever the choice (A1111's quirk)
        assert all(float(m.weight.detach().std()) < 0.02 for m in norms)
        spread = float(linear[0].weight.detach().std())
        assert spread < 0.02 if init == "Normal" else spread > 0.05, init


# --- A1111's file format --------------------------------------------------------------


def test_a1111_files_load_with_old_key_names_and_missing_metadata(tmp_path):
    # what A1111's oldest hypernetworks hold: two Linear layers under linear1 / linear2
    torch.manual_seed(1)
    weights = {
        "linear1.weight": torch.randn(32, 16),
        "linear1.bias": torch.randn(32),
        "linear2.weight": torch.randn(16, 32),
        "linear2.bias": torch.randn(16),
    }
    path = tmp_path / "old.pt"
    torch.save({16: (OrderedDict(weights), OrderedDict(weights))}, path)
    network = load_hypernetwork(path)
    assert network.name == "old" and network.structure.layer_structure == [1, 2, 1]
    assert network.structure.activate_output  # A1111 reads a missing flag as true
    network.set_multiplier(0.5)
    x = torch.randn(2, 3, 16)
    hidden = x @ weights["linear1.weight"].T + weights["linear1.bias"]
    expected = x + (hidden @ weights["linear2.weight"].T + weights["linear2.bias"]) * 0.5
    assert torch.allclose(network.layers[16][0](x), expected, atol=1e-5)


def test_files_with_code_need_allow_pickle(tmp_path):
    from pathlib import PurePosixPath

    path = _save_network(tmp_path, "odd", [16])
    data = torch.load(path, weights_only=True)
    data["optional_info"] = PurePosixPath("not/a/plain/value")  # any non-plain object
    torch.save(data, path)
    with pytest.raises(HypernetworkError, match="--allow-pickle"):
        load_hypernetwork(path)
    assert load_hypernetwork(path, allow_pickle=True).layers.keys() == {16}


def test_metadata_round_trips(tmp_path):
    structure = Structure([1, 1.5, 1], "tanh", True, True, [0, 0.2, 0], "KaimingUniform")
    network = create_hypernetwork("meta", [16, 24], structure, use_dropout=True)
    network.step, network.sd_checkpoint, network.sd_checkpoint_name = 9, "abcdef0123", "base"
    path = tmp_path / "meta.pt"
    write_restricted_pt(path, network.to_a1111())
    raw = torch.load(path, weights_only=True)
    assert {k for k in raw if isinstance(k, int)} == {16, 24}
    assert raw["layer_structure"] == [1, 1.5, 1] and raw["activation_func"] == "tanh"
    assert raw["dropout_structure"] == [0, 0.2, 0] and raw["use_dropout"] is True
    assert raw["last_layer_dropout"] is True and raw["activate_output"] is True
    assert (raw["is_layer_norm"], raw["weight_initialization"]) == (True, "KaimingUniform")
    back = load_hypernetwork(path)
    assert back.structure == structure and back.step == 9 and back.name == "meta"
    assert (back.sd_checkpoint, back.sd_checkpoint_name) == ("abcdef0123", "base")
    x = torch.randn(1, 4, 24)
    for a, b in zip(network.layers[24], back.layers[24], strict=True):
        assert torch.equal(a(x), b(x))


# --- learning-rate schedules ------------------------------------------------------------


def test_learning_rate_schedules_as_a1111_reads_them():
    rates = learn_rates("1e-5:7000, 5e-6:180000", 10000)
    assert rates == [1e-5] * 7000 + [5e-6] * 3000
    assert len(learn_rates("1e-5:7000, 5e-6:180000", 500000)) == 180000  # ends with it
    assert learn_rates("0.005", 30) == [0.005] * 30
    assert learn_rates("1e-3:10, 1e-4:-1", 20) == [1e-3] * 10 + [1e-4] * 10
    assert learn_rates("1e-3:10, 1e-4", 20) == [1e-3] * 10 + [1e-4] * 10
    assert learn_rates("1e-3:10", 20) == [1e-3] * 10  # A1111 stops where the schedule does
    # a step that goes backwards still runs one step at its rate before A1111 stops
    assert learn_rates("0.1:10, 0.2:5", 40) == [0.1] * 10 + [0.2]
    assert learn_rates("5e-3:0, 1e-3:4", 10) == [1e-3] * 4  # pairs ending by step 0 drop
    with pytest.raises(UsageError, match="not a rate"):
        learn_rates("fast:100", 10)


# --- in prompts and the X/Y/Z plot ------------------------------------------------------


def test_prompt_tags_for_the_hypernetwork_axes():
    assert prompt_with_hypernet("a cat", "style", None) == "a cat<hypernet:style:1.0>"
    assert prompt_with_hypernet("a cat", "style", 0.5) == "a cat<hypernet:style:0.5>"
    tagged = "a cat <hypernet:style:0.8> <hypernet:other:1>"
    assert prompt_with_hypernet(tagged, "style", 0.3) == (
        "a cat <hypernet:style:0.3> <hypernet:other:1>"
    )
    assert prompt_with_hypernet(tagged, None, 0.25) == (
        "a cat <hypernet:style:0.25> <hypernet:other:0.25>"
    )
    assert prompt_with_hypernet(tagged, "None", 0.5) == "a cat  "
    with pytest.raises(HypernetworkError, match="needs a <hypernet"):
        prompt_with_hypernet("a cat", None, 0.5)


def test_xyz_hypernetwork_axes_pick_the_closest_name(tmp_path):
    from curator.generation.xyz import XYZError, dry_run, parse_axis, plan_cells

    for name in ("anime_style", "anime_style_v2", "watercolor"):
        (tmp_path / f"{name}.pt").write_bytes(b"")
    base = _params(seed=1, hypernetwork_dirs=[str(tmp_path)])
    x, y = parse_axis("Hypernetwork=anime, None"), parse_axis("Hypernet str.=0.5, 1")
    cells = plan_cells(base, x, y, parse_axis(None))
    prompts = {(c.ix, c.iy): c.params.prompt for c in cells}
    assert prompts == {
        (0, 0): "a cat<hypernet:anime_style:0.5>",
        (0, 1): "a cat<hypernet:anime_style:1.0>",
        (1, 0): "a cat",
        (1, 1): "a cat",
    }
    report = dry_run(cells, x, y, parse_axis(None))
    assert report["axes"]["x"]["labels"] == ["anime_style", "None"]
    assert report["axes"]["y"]["labels"] == ["Hypernet str.: 0.5", "Hypernet str.: 1.0"]
    with pytest.raises(XYZError, match="unknown hypernetwork 'oil'"):
        plan_cells(base, parse_axis("Hypernetwork=oil"), parse_axis(None), parse_axis(None))
    with pytest.raises(XYZError, match="Hypernet str"):
        plan_cells(base, parse_axis("Hypernet str.=0.5"), parse_axis(None), parse_axis(None))


def test_hypernet_in_the_prompt_changes_the_image_and_is_recorded(model, tmp_path):
    import hashlib

    sizes = context_widths(model.pipeline.unet)
    path = _save_network(tmp_path / "hn", "inked", sizes)
    dirs = {"hypernetwork_dirs": [str(tmp_path / "hn")]}
    plain = generate(model, _params(**dirs), tmp_path / "o")[0]
    off = generate(model, _params(prompt="a cat <hypernet:inked:0>", **dirs), tmp_path / "o")[0]
    on = generate(model, _params(prompt="a cat <hypernet:inked:1>", **dirs), tmp_path / "o")[0]
    # at strength 0 the processor is diffusers' own attention: the same pixels
    assert np.array_equal(_pixels(plain.path), _pixels(off.path))
    assert not np.array_equal(_pixels(plain.path), _pixels(on.path))
    short = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert on.infotext.startswith("a cat <hypernet:inked:1>\n")
    assert f'Hypernet hashes: "inked: {short}"' in on.infotext
    # the pipeline is left as it was
    kinds = {type(p).__name__ for p in model.pipeline.unet.attn_processors.values()}
    assert kinds == {"AttnProcessor2_0"}
    with pytest.raises(HypernetworkError, match="hypernetwork 'nope' not found in"):
        generate(model, _params(prompt="a cat <hypernet:nope:1>", **dirs), tmp_path / "x")


def _run(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_regenerate_honours_hypernetworks_new_and_old_style(model, tiny_dir, tmp_path):
    from curator.ingest.infotext import Infotext, format_infotext

    db = tmp_path / "c.db"
    _run(db, "models", "checkpoints", "add", tiny_dir)
    _save_network(tmp_path / "hn", "inked", context_widths(model.pipeline.unet))
    made = json.loads(
        _run(
            db, "generate", "a cat <hypernet:inked:0.7>", "-m", tiny_dir, "--size", "32x32",
            "--steps", "2", "--seed", "8", "--hypernetwork-dir", tmp_path / "hn",
            "--out", tmp_path / "a", "--json",
        ).output
    )  # fmt: skip
    result = _run(db, "regenerate", made[0]["path"], "--out", tmp_path / "b", ok=False)
    assert "hypernetwork 'inked' not found" in result.output
    # registered in the catalog, the file is found without --hypernetwork-dir
    _run(db, "models", "checkpoints", "add", "--kind", "hypernetwork", tmp_path / "hn")
    again = json.loads(
        _run(db, "regenerate", made[0]["path"], "--out", tmp_path / "c", "--json").output
    )
    with Image.open(made[0]["path"]) as a, Image.open(again[0]["path"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert "Hypernet hashes" in b.info["parameters"]
    # older A1111 wrote the hypernetwork outside the prompt; its parser appends the tag
    old = tmp_path / "old" / "old.png"
    old.parent.mkdir()
    params = {"Steps": "2", "Sampler": "Euler", "Seed": "3", "Size": "32x32", "Model": "tiny"}
    params |= {"Hypernet": "inked", "Hypernet hash": "e3b0c442", "Hypernet strength": "0.5"}
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", format_infotext(Infotext("a cat", "", params)))
    Image.new("RGB", (32, 32)).save(old, pnginfo=info)
    _run(db, "scan", old.parent)
    plan = json.loads(_run(db, "regenerate", old, "--dry-run", "--json").output)
    assert plan[0]["prompt"] == "a cat<hypernet:inked:0.5>"


# --- training ---------------------------------------------------------------------------


def test_training_saves_what_a1111_loads_and_the_backend_uses(model, tiny_dir, tmp_path):
    data = make_data(tmp_path / "d", [(32, 32)])
    options = HypernetworkOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "hn"), steps=6, device="cpu",
        lr_schedule="1e-3:2, 5e-4:4", name="inked", layer_structure="1, 1.5, 1",
        activation="mish", layer_norm=True, dropout_structure="0, 0.1, 0", save_every=2,
    )  # fmt: skip
    result = train_hypernetwork(options)
    # the schedule ends at step 4, and so does training (as in A1111)
    assert [p.name for p in result.outputs] == ["inked-000002.pt", "inked.pt"]
    rates = [line.split(",")[3] for line in result.loss_log.read_text().splitlines()[1:]]
    assert rates == ["0.001", "0.001", "0.0005", "0.0005"]
    path = result.outputs[-1]
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickled = archive.read(next(n for n in names if n.endswith("/data.pkl")))
    # A1111's restricted unpickler (modules/safe.py) admits these entries and globals
    assert all(re.match(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$", n) for n in names)
    used = {a for op, a, _ in pickletools.genops(pickled) if op.name == "GLOBAL"}
    assert used <= {
        "torch._utils _rebuild_tensor_v2",
        "torch FloatStorage",
        "collections OrderedDict",
    }
    raw = torch.load(path, weights_only=True)
    assert {k for k in raw if isinstance(k, int)} == set(context_widths(model.pipeline.unet))
    assert (raw["name"], raw["step"], raw["activation_func"]) == ("inked", 4, "mish")
    assert raw["layer_structure"] == [1, 1.5, 1] and raw["dropout_structure"] == [0, 0.1, 0]
    assert raw["use_dropout"] is True and raw["sd_checkpoint_name"] == "tiny"
    plain = generate(model, _params(), tmp_path / "o")[0]
    params = _params(prompt="a cat <hypernet:inked:1>", hypernetwork_dirs=[str(tmp_path / "hn")])
    styled = generate(model, params, tmp_path / "o")[0]
    assert not np.array_equal(_pixels(plain.path), _pixels(styled.path))


def test_training_lowers_the_loss_on_a_repeated_batch(tiny_dir, tmp_path):
    from curator.generation.hypernet_attention import attach, detach

    data = make_data(tmp_path / "d", [(32, 32)])
    options = HypernetworkOptions(
        base=str(tiny_dir), data=str(data), out=str(tmp_path / "hn"), steps=25, lr=1e-2,
        device="cpu", name="learned", activation="relu",
    )  # fmt: skip
    result = train_hypernetwork(options)
    pipe = load_pipeline(str(tiny_dir), device="cpu").pipeline
    prompt = "sks cat, tag0, outdoors"
    before = _fixed_loss(pipe, data, prompt)
    network = load_hypernetwork(result.outputs[-1])
    previous = attach(pipe.unet, [network])
    after = _fixed_loss(pipe, data, prompt)
    detach(pipe.unet, previous)
    assert after < before * 0.97, (before, after)


def test_cli_trains_records_registers_and_generates(tiny_dir, tmp_path):
    from db import open_catalog
    from db.schema import Run

    db = tmp_path / "c.db"
    data = make_data(tmp_path / "d", [(32, 32)] * 2)
    report = json.loads(
        _run(
            db, "train", "hypernetwork", "--base", tiny_dir, "--data", data, "--out",
            tmp_path / "o", "--steps", "2", "--lr", "1e-3:1, 1e-4:2", "--layer-structure",
            "1, 2, 2, 1", "--activation", "swish", "--dropout", "--weight-init",
            "XavierUniform", "--name", "cli net", "--device", "cpu", "--json",
        ).output
    )  # fmt: skip
    assert report["outputs"] == [str(tmp_path / "o" / "cli net.pt")]
    raw = torch.load(report["outputs"][0], weights_only=True)
    assert raw["dropout_structure"] == [0, 0.3, 0, 0] and raw["activation_func"] == "swish"
    catalog = open_catalog(str(db))
    with catalog.session() as session:
        run = session.get(Run, report["run_id"])
        assert (run.status, run.params["method"]) == ("finished", "hypernetwork")
        assert run.params["lr_schedule"] == "1e-3:1, 1e-4:2" and run.counts["steps"] == 2
    catalog.close()
    listed = json.loads(
        _run(db, "models", "checkpoints", "ls", "--kind", "hypernetwork", "--json").output
    )
    assert [r["name"] for r in listed] == ["cli net"]
    made = json.loads(
        _run(
            db, "generate", "a cat <hypernet:cli net:1>", "-m", tiny_dir, "--size", "32x32",
            "--steps", "2", "--seed", "1", "--out", tmp_path / "g", "--json",
        ).output
    )  # fmt: skip
    assert "Hypernet hashes" in made[0]["infotext"]


def test_resume_continues_the_step_count_and_the_schedule(tiny_dir, tmp_path):
    data = make_data(tmp_path / "d", [(32, 32)])
    common = {"base": str(tiny_dir), "data": str(data), "device": "cpu", "name": "again"}
    schedule = "1e-3:3, 1e-4:6"
    first = train_hypernetwork(
        HypernetworkOptions(**common, out=str(tmp_path / "a"), steps=2, lr_schedule=schedule)
    )
    saved = first.outputs[-1]
    more = train_hypernetwork(
        HypernetworkOptions(
            **common, out=str(tmp_path / "b"), steps=5, lr_schedule=schedule, resume=str(saved)
        )
    )
    rows = [line.split(",") for line in more.loss_log.read_text().splitlines()[1:]]
    assert [(r[0], r[3]) for r in rows] == [("3", "0.001"), ("4", "0.0001"), ("5", "0.0001")]
    assert torch.load(more.outputs[-1], weights_only=True)["step"] == 5
    # training goes on from the saved weights: with a vanishing rate they stay
    still = train_hypernetwork(
        HypernetworkOptions(**common, out=str(tmp_path / "c"), steps=3, lr=1e-12, resume=str(saved))
    )
    before, after = load_hypernetwork(saved), load_hypernetwork(still.outputs[-1])
    for width, pair in before.layers.items():
        for a, b in zip(pair, after.layers[width], strict=True):
            for key, value in a.state_dict().items():
                assert torch.allclose(value, b.state_dict()[key], atol=1e-6)
    with pytest.raises(UsageError, match="2 steps behind it"):
        train_hypernetwork(
            HypernetworkOptions(**common, out=str(tmp_path / "x"), steps=2, resume=str(saved))
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer-structure", "2, 1"], "must start and end with 1"),
        (["--activation", "nope"], "unknown activation 'nope'"),
        (["--lr", "fast:soon"], "not a rate or A1111 schedule"),
        (["--lr", "1e-3:10", "--lr-scheduler", "cosine"], "leave --lr-scheduler constant"),
        (["--sizes", "768, big"], "--sizes"),
    ],
)
def test_bad_training_options_are_one_line_before_loading(tmp_path, args, message):
    data = make_data(tmp_path / "d", [(32, 32)])
    result = _run(
        tmp_path / "c.db", "train", "hypernetwork", "--base", tmp_path / "missing", "--data",
        data, "--out", tmp_path / "o", *args, ok=False,
    )  # fmt: skip
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1
