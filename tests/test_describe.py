"""`curator describe`: descriptions from known tags, captions, OCR text and faces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

from curator.cli import main
from curator.describe.compose import Facts, describe
from curator.describe.words import tag_words
from curator.tags.store import replace_source_tags, set_caption
from db import open_catalog
from db.schema import Caption, Detection, File, Processed


def cli(db, *args, ok=True):
    result = CliRunner().invoke(main, ["--db", str(db), *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def described(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(pics / "fox.png")
    Image.new("RGB", (40, 30), (30, 30, 200)).save(pics / "sign.jpg")
    db = tmp_path / "c.db"
    cli(db, "scan", pics, "--quiet")
    cat = open_catalog(str(db))
    with cat.write() as s:
        ids = {Path(p).stem: i for p, i in s.execute(select(File.path, File.image_id))}
        replace_source_tags(
            s,
            ids["fox"],
            "model:wd",
            [
                ("2girls", "general", 0.97),
                ("long_hair", "general", 0.9),
                ("hair", "general", 0.85),
                ("red_scarf", "general", 0.8),
                ("snow", "general", 0.75),
                ("general", "rating", 0.9),
                ("highres", "meta", 0.9),
                ("score_9", "general", 0.9),
                ("hatsune_miku_(vocaloid)", "character", 0.9),
            ],
        )
        set_caption(s, ids["fox"], "two girls walking in the snow", source="model:blip")
        replace_source_tags(s, ids["sign"], "model:wd", [("road_sign", "general", 0.9)])
        for y, text in ((5, "STOP"), (20, "ahead")):
            s.add(
                Detection(
                    image_id=ids["sign"], detector="text", label="text", score=0.9,
                    x=1, y=y, w=10, h=5, text=text,
                )
            )  # fmt: skip
        s.add(
            Detection(
                image_id=ids["sign"], detector="faces", label="face", score=1.0,
                x=1, y=1, w=5, h=5,
            )
        )  # fmt: skip
        s.add(Processed(model="faces", revision="r", image_id=ids["sign"]))
    cat.close()
    return db, pics


def test_tags_read_as_words():
    assert tag_words("2girls") == "two girls"
    assert tag_words("1boy") == "one boy"
    assert tag_words("6+girls") == "six or more girls"
    assert tag_words("long_hair") == "long hair"
    assert tag_words("hatsune_miku_(vocaloid)") == "hatsune miku"


def test_description_from_caption_tags_text_and_faces(described):
    db, pics = described
    fox = cli(db, "describe", pics / "fox.png", "--plain").output.strip()
    assert fox == (
        "Two girls walking in the snow. It shows long hair and red scarf. "
        "The character is Hatsune Miku."
    )
    for absent in ("_", "highres", "score", "general", "rating"):
        assert absent not in fox
    sign = cli(db, "describe", pics / "sign.jpg").output.strip()
    assert sign == (
        "An image showing road sign. The image contains the text: “STOP ahead”. "
        "One face is visible."
    )


def test_several_images_are_plain_paragraphs_and_stored_for_export(described):
    db, _ = described
    out = cli(db, "describe", "--where", "", "--length", "long").output
    paragraphs = out.strip().split("\n\n")
    assert [p.split(":")[0] for p in paragraphs] == ["fox.png", "sign.jpg"]
    assert "\x1b[" not in out  # not a terminal: no colour codes
    cat = open_catalog(str(db))
    with cat.session() as s:
        rows = s.execute(select(Caption.source, Caption.text).where(Caption.kind == "description"))
        stored = list(rows)
    cat.close()
    assert len(stored) == 2 and all(source == "describe" for source, _ in stored)


def test_json_and_html_formats(described):
    db, pics = described
    data = json.loads(cli(db, "describe", pics / "fox.png", "--format", "json").output)
    assert data[0]["description"].startswith("Two girls walking in the snow.")
    html = cli(db, "describe", pics / "sign.jpg", "--format", "html").output.strip()
    assert html.startswith('<img src="') and html.endswith('">')
    assert 'alt="An image showing road sign.' in html and "“STOP ahead”" in html
    quoted = describe(Facts(caption='a sign saying "<no> & yes"'))
    from curator.describe.catalog import Described
    from curator.describe.render import as_html

    element = as_html([Described(1, "a b.png", quoted)])
    assert "&lt;no&gt; &amp; yes" in element and "&quot;" in element


def test_write_metadata_makes_a_copy_unless_in_place(described):
    db, pics = described
    before = (pics / "fox.png").read_bytes()
    data = json.loads(cli(db, "describe", pics / "fox.png", "--write-metadata", "--json").output)
    assert (pics / "fox.png").read_bytes() == before
    copy = Path(data[0]["written"])
    assert copy == pics / "fox.described.png"
    with Image.open(copy) as img:
        assert img.text["Description"] == data[0]["description"]
    refused = cli(db, "describe", pics / "fox.png", "--in-place", ok=False)
    assert refused.exit_code != 0 and refused.output.startswith("error:")


def test_no_input_is_one_line_error(described):
    db, _ = described
    result = cli(db, "describe", ok=False)
    assert result.exit_code != 0
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1
