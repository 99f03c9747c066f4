"""Model resolution: explicit paths, imported models, the hub cache, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from taggers import registry
from taggers.errors import ModelLoadError, ModelNotFoundError, TaggerError
from taggers.factory import load_model
from taggers.registry import (
    DEEPDANBOORU,
    WD14,
    available_locally,
    default_models_dir,
    get_preset,
    import_model,
    list_presets,
    resolve,
)
from tests.fixtures.tiny_models import build_deepdanbooru_model, build_wd14_model

WD_V2 = [
    "wd-v1-4-moat-tagger-v2",
    "wd-v1-4-swinv2-tagger-v2",
    "wd-v1-4-convnext-tagger-v2",
    "wd-v1-4-convnextv2-tagger-v2",
    "wd-v1-4-vit-tagger-v2",
]
WD_V3 = [
    "wd-vit-tagger-v3",
    "wd-swinv2-tagger-v3",
    "wd-convnext-tagger-v3",
    "wd-vit-large-tagger-v3",
    "wd-eva02-large-tagger-v3",
]
PRESET = "wd-vit-tagger-v3"
IMPORT_COMMAND = f"curator models import DIR --name {PRESET}"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def wd14_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wd14_model(tmp_path_factory.mktemp("wd14"), size=32)


@pytest.fixture(scope="module")
def dd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_deepdanbooru_model(tmp_path_factory.mktemp("dd"), size=32)


def make_hub_cache(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Lay files out the way huggingface_hub caches a snapshot of `repo`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, source in files.items():
        shutil.copy(source, snapshot / name)
    return snapshot


def test_presets_are_a_table_of_the_published_taggers() -> None:
    presets = {p.name: p for p in list_presets()}
    for name in WD_V2 + WD_V3:
        preset = presets[name]
        assert preset.kind == WD14
        assert preset.repo == f"SmilingWolf/{name}"
        assert preset.files == ("model.onnx", "selected_tags.csv")
    assert presets["deepdanbooru"].kind == DEEPDANBOORU
    assert presets["deepdanbooru"].tags_file == "tags.txt"
    assert get_preset("no-such-model") is None


def test_default_models_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CURATOR_MODELS", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"
    monkeypatch.delenv("CURATOR_MODELS")
    assert default_models_dir() == Path.home() / ".cache" / "curator" / "models"


def test_resolve_a_directory(wd14_dir: Path, tmp_path: Path) -> None:
    resolved = resolve(str(wd14_dir), models_dir=tmp_path)
    assert resolved.kind == WD14
    assert resolved.model_path == wd14_dir / "model.onnx"
    assert resolved.tags_path == wd14_dir / "selected_tags.csv"
    assert resolved.source == "path"
    assert resolved.name == wd14_dir.name


def test_resolve_an_onnx_file(wd14_dir: Path, dd_dir: Path, tmp_path: Path) -> None:
    resolved = resolve(str(wd14_dir / "model.onnx"), models_dir=tmp_path)
    assert (resolved.kind, resolved.name) == (WD14, wd14_dir.name)
    dd = resolve(str(dd_dir / "deepdanbooru.onnx"), models_dir=tmp_path)
    assert (dd.kind, dd.name, dd.tags_path) == (DEEPDANBOORU, "deepdanbooru", dd_dir / "tags.txt")


def test_a_directory_without_tags_names_the_missing_file(wd14_dir: Path, tmp_path: Path) -> None:
    shutil.copy(wd14_dir / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(ModelNotFoundError, match="selected_tags.csv"):
        resolve(str(tmp_path), models_dir=tmp_path / "models")
    with pytest.raises(ModelNotFoundError, match="selected_tags.csv"):
        resolve(str(tmp_path / "model.onnx"), models_dir=tmp_path / "models")


def test_a_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve(str(tmp_path / "nothing" / "model.onnx"), models_dir=tmp_path)


def test_several_onnx_files_are_ambiguous(dd_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "dd"
    shutil.copytree(dd_dir, copy)
    shutil.copy(copy / "deepdanbooru.onnx", copy / "other.onnx")
    with pytest.raises(ModelLoadError, match="several .onnx"):
        resolve(str(copy), models_dir=tmp_path)


def test_import_then_resolve_by_name(wd14_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    target = import_model(wd14_dir, name=PRESET, models_dir=models)
    assert target == models / PRESET
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx", "selected_tags.csv"]
    assert [p.name for p in models.iterdir()] == [PRESET]  # no staging directory left
    resolved = resolve(PRESET, models_dir=models)
    assert resolved.source == "models_dir"
    assert resolved.model_path == target / "model.onnx"
    assert available_locally(PRESET, models)
    model = load_model(PRESET, models_dir=models, threads=1)
    assert model.name == PRESET
    assert len(model.predict([model.preprocess(Image.new("RGB", (10, 10)))])) == 1


def test_import_under_a_custom_name(dd_dir: Path, tmp_path: Path) -> None:
    target = import_model(dd_dir, name="my-dd", models_dir=tmp_path)
    assert (target / "tags-character.txt").is_file()
    resolved = resolve("my-dd", models_dir=tmp_path)
    assert (resolved.kind, resolved.source) == (DEEPDANBOORU, "models_dir")


def test_import_refuses_to_replace_unless_asked(
    wd14_dir: Path, dd_dir: Path, tmp_path: Path
) -> None:
    import_model(wd14_dir, name="mine", models_dir=tmp_path)
    with pytest.raises(TaggerError, match="already exists"):
        import_model(dd_dir, name="mine", models_dir=tmp_path)
    import_model(dd_dir, name="mine", models_dir=tmp_path, overwrite=True)
    assert resolve("mine", models_dir=tmp_path).kind == DEEPDANBOORU
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_import_checks_the_kind_and_the_name(dd_dir: Path, wd14_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TaggerError, match="preset"):
        import_model(dd_dir, name=PRESET, models_dir=tmp_path)
    with pytest.raises(TaggerError, match="invalid model name"):
        import_model(wd14_dir, name="../escape", models_dir=tmp_path)
    with pytest.raises(ModelNotFoundError):
        import_model(tmp_path / "absent", name="x", models_dir=tmp_path)


def test_resolve_from_the_hub_cache(wd14_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snapshot = make_hub_cache(
        cache,
        f"SmilingWolf/{PRESET}",
        {
            "model.onnx": wd14_dir / "model.onnx",
            "selected_tags.csv": wd14_dir / "selected_tags.csv",
        },
    )
    models = tmp_path / "models"
    resolved = resolve(PRESET, models_dir=models, cache_dir=cache)
    assert resolved.source == "hub_cache"
    assert resolved.model_path == snapshot / "model.onnx"
    assert available_locally(get_preset(PRESET), models, cache_dir=cache)
    assert not available_locally("wd-swinv2-tagger-v3", models, cache_dir=cache)
    model = load_model(PRESET, models_dir=models, cache_dir=cache, threads=1)
    assert model.input_size == 32


def test_offline_miss_names_the_file_and_the_import_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve(PRESET, models_dir=tmp_path / "models", cache_dir=tmp_path / "hub")
    message = str(info.value)
    assert "model.onnx" in message
    assert IMPORT_COMMAND in message
    assert "HF_HUB_OFFLINE" in message


def test_explicit_offline_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls: list[bool] = []

    def no_network(*args: object, local_files_only: bool = False, **kwargs: object) -> str:
        calls.append(local_files_only)
        raise OSError("cache miss")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        resolve(PRESET, models_dir=tmp_path, offline=True)
    assert calls == [True]  # the cache was checked, the network never tried


def test_download_failure_becomes_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("taggers.registry._hub_unreachable", lambda: None)

    def unreachable(*args: object, local_files_only: bool = False, **kwargs: object) -> str:
        raise ConnectionError("network is unreachable" if not local_files_only else "miss")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    with pytest.raises(ModelNotFoundError) as info:
        resolve(PRESET, models_dir=tmp_path)
    assert "network is unreachable" in str(info.value)
    assert IMPORT_COMMAND in str(info.value)


def test_download_when_online(
    monkeypatch: pytest.MonkeyPatch, wd14_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("taggers.registry._hub_unreachable", lambda: None)
    requested: list[tuple[str, str]] = []

    def fake_download(repo: str, filename: str, *, local_files_only: bool = False, **kw: object):
        if local_files_only:
            raise FileNotFoundError(filename)
        requested.append((repo, filename))
        return str(wd14_dir / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    resolved = resolve(PRESET, models_dir=tmp_path)
    assert resolved.source == "hub"
    assert requested == [
        (f"SmilingWolf/{PRESET}", "model.onnx"),
        (f"SmilingWolf/{PRESET}", "selected_tags.csv"),
    ]


def test_unresolvable_hub_fails_fast_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")

    def must_not_download(*args: object, local_files_only: bool = False, **kw: object) -> str:
        if local_files_only:
            raise FileNotFoundError("miss")
        raise AssertionError("tried to download although the hub cannot be resolved")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", must_not_download)
    with pytest.raises(ModelNotFoundError, match="hub is unreachable") as info:
        resolve(PRESET, models_dir=tmp_path)
    assert IMPORT_COMMAND in str(info.value)


def test_unknown_names_point_at_import(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="curator models import DIR --name my-model"):
        resolve("my-model", models_dir=tmp_path)


def test_an_incomplete_import_is_reported(wd14_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "half"
    broken.mkdir()
    shutil.copy(wd14_dir / "model.onnx", broken / "model.onnx")
    with pytest.raises(ModelNotFoundError, match="selected_tags.csv"):
        resolve("half", models_dir=tmp_path)


def test_detector_files_are_found_in_their_packages() -> None:
    for detector in registry.list_detectors():
        for path in registry.detector_files(detector.name):
            assert path.is_file()
    with pytest.raises(TaggerError, match="unknown detector"):
        registry.detector_files("nope")
