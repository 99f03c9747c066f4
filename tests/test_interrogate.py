"""The interrogator's four modes against clip-interrogator 0.6.0 on a tiny random model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from PIL import Image  # noqa: E402

from taggers.clip.banks import DATA_FILES, EmbeddingCache, load_banks  # noqa: E402
from taggers.clip.interrogator import Interrogator, InterrogatorSettings  # noqa: E402
from taggers.clip.loading import load_clip  # noqa: E402
from tests.fixtures.tiny_clip import build_tiny_clip  # noqa: E402

# Small banks keep the reference fast; a 64-term chunk still exercises chunked ranking.
BANK_SIZES = {"artists": 40, "flavors": 300, "mediums": 20, "movements": 25, "negative": 12}
SETTINGS = dict(chunk_size=64, flavor_intermediate_count=48)
MAX_FLAVORS = 8
CAPTION = "a painting of a red fox in a snowy forest"
TIE = 1e-5


def _sample_banks(dest: Path) -> Path:
    """Term files drawn from the real banks when installed, else made-up terms."""
    from taggers.clip import banks as bank_module

    rng = random.Random(7)
    try:
        source = bank_module.data_dir()
    except Exception:  # noqa: BLE001 - no installed banks: synthetic terms are as good
        source = None
    dest.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        if source is not None:
            terms = bank_module.read_terms(source / f"{name}.txt")
            terms = rng.sample(terms, BANK_SIZES[name])
        else:
            terms = [f"{name} term {i}" for i in range(BANK_SIZES[name])]
        (dest / f"{name}.txt").write_text("\n".join(terms), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("interrogate")
    model_dir = build_tiny_clip(root / "clip")
    data = _sample_banks(root / "data")
    clip = load_clip(str(model_dir), models_dir=root / "models", device="cpu")
    banks = load_banks(data=data)
    image = Image.new("RGB", (48, 40), (180, 40, 30))
    for x in range(0, 48, 6):
        for y in range(0, 40, 5):
            image.putpixel((x, y), (20, 200, 90))
    return root, clip, banks, data, image


def _ours(setup, cache_dir=None, **overrides):
    root, clip, banks, _, image = setup
    settings = InterrogatorSettings(**{**SETTINGS, "max_flavors": MAX_FLAVORS, **overrides})
    ours = Interrogator(clip, banks, EmbeddingCache(cache_dir), settings)
    features = ours.image_features(clip.transform(image).unsqueeze(0))
    return ours, features


@pytest.fixture(scope="module")
def reference(setup):
    ci = pytest.importorskip(
        "clip_interrogator", reason="clip-interrogator is the reference (pip install it)"
    )
    root, clip, _, data, _ = setup
    config = ci.Config(
        caption_model_name=None,
        clip_model_name="ViT-B-32/none",  # only its tokenizer name is read
        cache_path=None,
        download_cache=False,
        data_path=str(data),
        device="cpu",
        quiet=True,
        **SETTINGS,
    )
    config.clip_model = clip.model
    config.clip_preprocess = clip.transform
    return ci.Interrogator(config)


def _agree(ours: Interrogator, features, mine: str, theirs: str) -> None:
    if mine == theirs:
        return
    a, b = ours.similarities(features, [mine, theirs])
    assert abs(a - b) < TIE, f"ours {mine!r} ({a}) vs reference {theirs!r} ({b})"


def test_fast_equals_reference(setup, reference):
    ours, features = _ours(setup)
    theirs = reference.interrogate_fast(setup[4], MAX_FLAVORS, caption=CAPTION)
    _agree(ours, features, ours.fast(features, CAPTION), theirs)
    assert ours.fast(features, CAPTION).startswith(CAPTION + ", ")


def test_classic_equals_reference(setup, reference):
    ours, features = _ours(setup)
    theirs = reference.interrogate_classic(setup[4], caption=CAPTION)
    mine = ours.classic(features, CAPTION)
    _agree(ours, features, mine, theirs)
    assert any(mine.startswith(f"{CAPTION}, {m}") for m in setup[2]["mediums"])


@pytest.mark.parametrize("prefix_kv", [True, False])
def test_best_equals_reference(setup, reference, prefix_kv):
    ours, features = _ours(setup, prefix_kv=prefix_kv)
    theirs = reference.interrogate(
        setup[4], min_flavors=2, max_flavors=MAX_FLAVORS, caption=CAPTION
    )
    ours.settings.min_flavors = 2
    _agree(ours, features, ours.best(features, CAPTION), theirs)


def test_negative_equals_reference(setup, reference):
    ours, features = _ours(setup)
    theirs = reference.interrogate_negative(setup[4], max_flavors=MAX_FLAVORS)
    mine = ours.negative(features)
    _agree(ours, features, mine, theirs)
    negative_terms = set(setup[2]["flavors"]) | set(setup[2]["negative"])
    assert all(term in negative_terms for term in mine.split(", "))


def test_best_never_scores_below_the_caption(setup):
    ours, features = _ours(setup)
    prompt = ours.best(features, CAPTION)
    assert prompt.startswith(CAPTION)
    assert ours.similarity(features, prompt) >= ours.similarity(features, CAPTION) - TIE
    assert not ours.at_max_len(prompt) or len(prompt.split(", ")) > 1


def test_second_interrogation_encodes_no_bank_text(setup, tmp_path):
    first, features = _ours(setup, cache_dir=tmp_path)
    first.fast(features, CAPTION)
    assert first.cache.encoded_texts > 0
    second, features = _ours(setup, cache_dir=tmp_path)
    assert second.fast(features, CAPTION) == first.fast(features, CAPTION)
    assert second.cache.encoded_texts == 0
    # Other terms are another cache entry, not a stale hit.
    banks = dict(setup[2])
    banks["mediums"] = [*banks["mediums"], "woodcut print"]
    third = Interrogator(setup[1], banks, EmbeddingCache(tmp_path), first.settings)
    third.classic(features, CAPTION)
    assert third.cache.encoded_texts == len(banks["mediums"])
