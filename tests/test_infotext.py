import json
import random

import pytest

from curator.errors import CuratorError
from curator.ingest.infotext import (
    Infotext,
    InfotextError,
    format_infotext,
    generation_fields,
    parse_infotext,
    parse_novelai_comment,
)


def a1111_write(prompt: str, negative: str, params: dict[str, str]) -> str:
    """What A1111's `create_infotext` writes, with its `quote()`, kept independent of ours."""

    def quote(text: str) -> str:
        if "," not in text and "\n" not in text and ":" not in text:
            return text
        return json.dumps(text, ensure_ascii=False)

    pairs = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items())
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{pairs}".strip()


SD15 = (
    "masterpiece, best quality, 1girl, solo, (long hair:1.2), [smile:laugh:0.5], "
    '<lora:add_detail:0.8>, "quoted words", café ☕, 猫耳\n'
    "BREAK\n"
    "night sky, (stars:0.9)\n"
    "Negative prompt: (worst quality, low quality:1.4), EasyNegative,\n"
    "bad hands, [extra fingers::0.2]\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3912845021, Size: 512x768, "
    "Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.45, Clip skip: 2, "
    "ENSD: 31337, Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+ Anime6B, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03", '
    "Version: v1.6.0"
)

DYNAMIC_PROMPTS = (
    "1girl, red hair, smile\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: e6e99610c4, "
    'Model: v1-5-pruned-emaonly, Template: "1girl, {red|blue} hair, __expressions__", '
    'Negative Template: "lowres, bad hands", Wildcard prompt: "__colors__ hair, smile", '
    "Version: v1.7.0"
)

ADETAILER = (
    "portrait photo of a woman, detailed skin\n"
    "Negative prompt: cartoon\n"
    "Steps: 25, Sampler: DPM++ SDE Karras, CFG scale: 6, Seed: 77, Size: 768x1024, "
    "Model hash: 879db523c3, Model: dreamshaper_8, ADetailer model: face_yolov8n.pt, "
    'ADetailer prompt: "smile,\\nclosed eyes", ADetailer confidence: 0.3, '
    "ADetailer dilate erode: 4, ADetailer mask blur: 4, ADetailer denoising strength: 0.4, "
    "ADetailer inpaint only masked: True, ADetailer inpaint padding: 32, "
    "ADetailer version: 23.11.1, Version: v1.7.0"
)

SDXL_NO_NEGATIVE = (
    "a lighthouse on a cliff at dusk, volumetric light\n"
    "Steps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 5, Seed: 42, "
    "Size: 832x1216, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, "
    "VAE: sdxl_vae.safetensors, Refiner: sd_xl_refiner_1.0 [7440042bbd], "
    'Refiner switch at: 0.8, Hires prompt: "猫, かわいい: 1", Emphasis: No norm, Version: v1.10.1'
)


@pytest.mark.parametrize("text", [SD15, DYNAMIC_PROMPTS, ADETAILER, SDXL_NO_NEGATIVE])
def test_a1111_samples_round_trip_exactly(text: str) -> None:
    assert format_infotext(parse_infotext(text)) == text


def test_sample_fields() -> None:
    info = parse_infotext(SD15)
    assert info.prompt.startswith("masterpiece, best quality")
    assert info.prompt.endswith("BREAK\nnight sky, (stars:0.9)")
    assert info.negative_prompt == (
        "(worst quality, low quality:1.4), EasyNegative,\nbad hands, [extra fingers::0.2]"
    )
    assert info.steps == 28
    assert info.sampler == "DPM++ 2M Karras"
    assert info.cfg_scale == 7.5
    assert info.seed == 3912845021
    assert (info.width, info.height) == (512, 768)
    assert info.model_hash == "7f96a1a9ca"
    assert info.model == "anything-v5"
    assert info.denoising_strength == 0.45
    assert info.clip_skip == 2
    assert info.params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert info.params["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"
    assert list(info.params)[:3] == ["Steps", "Sampler", "CFG scale"]


def test_quoted_values_are_unquoted() -> None:
    dynamic = parse_infotext(DYNAMIC_PROMPTS)
    assert dynamic.params["Template"] == "1girl, {red|blue} hair, __expressions__"
    assert dynamic.params["Wildcard prompt"] == "__colors__ hair, smile"
    assert dynamic.params["Negative Template"] == "lowres, bad hands"
    assert parse_infotext(ADETAILER).params["ADetailer prompt"] == "smile,\nclosed eyes"
    assert parse_infotext(SDXL_NO_NEGATIVE).params["Hires prompt"] == "猫, かわいい: 1"


def test_no_negative_prompt() -> None:
    info = parse_infotext(SDXL_NO_NEGATIVE)
    assert info.negative_prompt == ""
    assert info.prompt == "a lighthouse on a cliff at dusk, volumetric light"
    assert info.clip_skip is None


def test_written_by_reference_writer_parses_back() -> None:
    params = {
        "Steps": "20",
        "Sampler": "Euler",
        "CFG scale": "7",
        "Seed": "5",
        "Size": "640x448",
        "Lora hashes": "a: 123, b: 456",
        "Hires upscaler": "Latent (nearest-exact)",
        "ADetailer prompt": "line one\nline two",
        "Hypertile": "Hypertile",  # A1111 writes a pair whose value is its key as the bare key
        "Note": 'say "hi"',
        "Empty": "",
        "Padded": "  two spaces",
        "Looks quoted": '"fancy"',
    }
    prompt = 'a "quoted" word, (emphasis:1.2), [from:to:0.5], <lora:x:0.8>\nBREAK\nsecond line'
    negative = "blurry,\nlowres:1, (bad:1.3)"
    text = a1111_write(prompt, negative, params)
    assert "Hypertile, Note" in text
    info = parse_infotext(text)
    assert info == Infotext(prompt, negative, params)
    assert format_infotext(info) == text


def test_empty_value_as_last_pair() -> None:
    params = {"Steps": "20", "Sampler": "Euler", "Seed": "1", "Comment": ""}
    text = a1111_write("cat", "", params)
    assert text.endswith("Comment:")
    assert parse_infotext(text).params == params
    assert format_infotext(parse_infotext(text)) == text


def test_only_negative_prompt_and_params() -> None:
    text = a1111_write("", "lowres", {"Steps": "20", "Sampler": "Euler", "Seed": "1"})
    assert text.startswith("Negative prompt: lowres\n")
    info = parse_infotext(text)
    assert (info.prompt, info.negative_prompt) == ("", "lowres")
    assert format_infotext(info) == text


@pytest.mark.parametrize(
    "text",
    [
        "a cat sitting on a mat",
        "masterpiece, (red:1.2), (blue:0.8), (green:1.1)",
        "line one\nSteps: 20, Sampler: Euler",
        "[cat:dog:0.5], <lora:x:0.8>, <lyco:y:1>",
    ],
)
def test_last_line_with_fewer_than_three_pairs_is_prompt(text: str) -> None:
    info = parse_infotext(text)
    assert info.params == {}
    assert info.prompt == text
    assert format_infotext(info) == text


def test_last_line_with_three_pairs_is_parameters() -> None:
    info = parse_infotext("a cat\nSteps: 20, Sampler: Euler, Seed: 7")
    assert info.prompt == "a cat"
    assert info.params == {"Steps": "20", "Sampler": "Euler", "Seed": "7"}


def test_empty_text() -> None:
    assert parse_infotext("") == Infotext("", "", {})
    assert format_infotext(Infotext()) == ""


def test_windows_line_endings_are_read() -> None:
    info = parse_infotext("a cat\r\nNegative prompt: dog\r\nSteps: 20, Sampler: Euler, Seed: 7")
    assert (info.prompt, info.negative_prompt, info.steps) == ("a cat", "dog", 20)


def test_malformed_numbers_read_as_none_and_keep_raw() -> None:
    text = (
        "a cat\nSteps: twenty, Sampler: Euler, CFG scale: high, Seed: 12a, Size: 512by512, "
        "Denoising strength: nan, Clip skip: 2"
    )
    info = parse_infotext(text)
    assert (info.steps, info.cfg_scale, info.seed, info.width, info.height) == (None,) * 5
    assert info.denoising_strength is None
    assert info.params["Steps"] == "twenty"
    fields = generation_fields(info)
    assert fields["steps"] is None and fields["clip_skip"] == 2 and fields["sampler"] == "Euler"
    assert fields["extra"] == {
        "Steps": "twenty",
        "CFG scale": "high",
        "Seed": "12a",
        "Size": "512by512",
        "Denoising strength": "nan",
    }
    assert format_infotext(info) == text


def test_generation_fields() -> None:
    fields = generation_fields(parse_infotext(SD15))
    assert fields["prompt"].startswith("masterpiece")
    assert fields["negative_prompt"].startswith("(worst quality")
    assert {k: fields[k] for k in ("steps", "sampler", "cfg_scale", "seed", "width", "height")} == {
        "steps": 28,
        "sampler": "DPM++ 2M Karras",
        "cfg_scale": 7.5,
        "seed": 3912845021,
        "width": 512,
        "height": 768,
    }
    assert (fields["model_hash"], fields["model"]) == ("7f96a1a9ca", "anything-v5")
    assert (fields["denoising_strength"], fields["clip_skip"]) == (0.45, 2)
    assert list(fields["extra"]) == [
        "ENSD",
        "Hires upscale",
        "Hires steps",
        "Hires upscaler",
        "Lora hashes",
        "TI hashes",
        "Version",
    ]


_KEYS = ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Lora hashes", "Hires prompt"]
_ALPHABET = list("abcXYZ019 ,:\n\"'()[]<>|{}_-/.\\é猫☕") + ["BREAK", "Negative prompt:"]


def _random_text(rng: random.Random, max_len: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, max_len)))


def _random_prompt(rng: random.Random) -> str:
    lines = "\n".join(_random_text(rng, 12) for _ in range(rng.randint(1, 3))).split("\n")
    # A prompt line that itself starts with "Negative prompt:" is ambiguous in the format.
    lines = [line for line in lines if not line.lstrip().startswith("Negative prompt:")]
    return "\n".join(lines).lstrip()


def test_random_a1111_texts_round_trip() -> None:
    rng = random.Random(1234)
    for _ in range(500):
        prompt = _random_prompt(rng)
        negative = _random_text(rng, 12) if rng.random() < 0.7 else ""
        keys = rng.sample(_KEYS, rng.randint(3, len(_KEYS)))
        keys += [f"Extra {i}" for i in range(rng.randint(0, 3))]
        # An unquoted value that starts with '"' (A1111 leaves `"a` as is) can read as the
        # start of a quoted value; that ambiguity is in the format itself.
        params = {key: _random_text(rng, 10).lstrip('"') for key in keys}
        last = keys[-1]
        params[last] = params[last].rstrip()  # A1111 strips the whole text
        if sum(1 for k, v in params.items() if k != v) < 3:
            continue
        text = a1111_write(prompt, negative, params)
        info = parse_infotext(text)
        assert format_infotext(info) == text
        assert info == Infotext(prompt, negative, params), text


NOVELAI_V1 = json.dumps(
    {
        "steps": 28,
        "sampler": "k_euler_ancestral",
        "seed": 2785117015,
        "strength": 0.7,
        "noise": 0.2,
        "scale": 11.0,
        "uc": "lowres, bad anatomy, bad hands, text, error",
        "qualityToggle": True,
    }
)

NOVELAI_V3 = json.dumps(
    {
        "prompt": "1girl, {{masterpiece}}, [[sketch]], best quality",
        "steps": 28,
        "height": 1216,
        "width": 832,
        "scale": 5.0,
        "uncond_scale": 0.0,
        "cfg_rescale": 0.0,
        "seed": 12345,
        "n_samples": 1,
        "noise_schedule": "native",
        "sampler": "k_euler",
        "controlnet_model": None,
        "sm": False,
        "v4_prompt": {"caption": {"base_caption": "1girl, best quality", "char_captions": []}},
        "uc": "nsfw, lowres, {bad}, error",
        "request_type": "PromptGenerateRequest",
    },
    ensure_ascii=False,
)


def test_novelai_v1_comment_with_description() -> None:
    info = parse_novelai_comment(NOVELAI_V1, description="masterpiece, 1girl, cat ears")
    assert info.prompt == "masterpiece, 1girl, cat ears"
    assert info.negative_prompt == "lowres, bad anatomy, bad hands, text, error"
    assert (info.steps, info.sampler, info.cfg_scale, info.seed) == (
        28,
        "k_euler_ancestral",
        11.0,
        2785117015,
    )
    assert info.width is None
    assert info.params["strength"] == "0.7"
    assert info.params["qualityToggle"] == "true"
    fields = generation_fields(info)
    assert fields["extra"] == {"strength": "0.7", "noise": "0.2", "qualityToggle": "true"}


def test_novelai_v3_comment() -> None:
    info = parse_novelai_comment(NOVELAI_V3, description="ignored when the comment has a prompt")
    assert info.prompt == "1girl, {{masterpiece}}, [[sketch]], best quality"
    assert info.negative_prompt == "nsfw, lowres, {bad}, error"
    assert (info.width, info.height, info.steps, info.cfg_scale) == (832, 1216, 28, 5.0)
    assert json.loads(info.params["v4_prompt"])["caption"]["base_caption"] == "1girl, best quality"
    assert "controlnet_model" not in info.params
    # NovelAI metadata written as A1111 infotext reads back unchanged.
    assert parse_infotext(format_infotext(info)) == info


@pytest.mark.parametrize("comment", ["{not json", "[1, 2]"])
def test_novelai_bad_comment(comment: str) -> None:
    with pytest.raises(InfotextError):
        parse_novelai_comment(comment)
    assert issubclass(InfotextError, CuratorError)
