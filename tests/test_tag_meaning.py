"""One meaning of "has tag": queries match exactly the images whose effective tags hold it.

The catalog goes through every kind of tag rule (alias, implication with a chain,
blacklist, prune, trigger) and user removal and addition, made by the library's own
edit functions; then every query below must select the images whose
`effective_tags(..., implied=True)` satisfy it, in both compiled forms (rules
written into the SQL, rules read by the SQL) and both paging plans.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from curator.catalog.imageinfo import top_tags
from curator.curation import edits
from curator.query.compile import compile_query, page_ids
from curator.tags import rules as tagrules
from curator.tags.store import replace_source_tags
from curator.tags.view import TagRow, TagRules, effective_tags
from db.schema import Image

WD = "model:wd"

# image (width 100*i selects it) → model tags (name, category, score)
MODEL = {
    1: [("long_hair", "general", 0.9), ("1girl", "general", 0.99), ("watermark", "meta", 0.8)],
    2: [("very_long_hair", "general", 0.7), ("smile", "general", 0.4)],
    3: [("hair", "general", 0.3), ("long_hair", "general", 0.8)],
    4: [("long_hair", "general", 0.6), ("hatsune_miku", "character", 0.9)],
    5: [("smile", "general", 0.2)],
    6: [("long_hair", "general", 0.5), ("blue_eyes", "general", 0.6)],
    7: [("smile", "general", 0.9), ("blue_sky", "general", 0.7)],
    8: [("watermark", "meta", 0.95), ("blue_eyes", "general", 0.3)],
    9: [],
    10: [("hair", "general", 0.3), ("long_hair", "general", 0.8)],  # hair scores 0.8
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    from db import open_catalog

    cat = open_catalog(str(tmp_path_factory.mktemp("meaning") / "catalog.db"))
    with cat.write() as s:
        for i, tags in MODEL.items():
            s.add(
                Image(
                    id=i,
                    sha256=f"{i:064x}",
                    bytes=100,
                    width=100 * i,
                    height=100,
                    format="PNG",
                    mode="RGB",
                )
            )
            s.flush()
            replace_source_tags(s, i, WD, tags)
    tagrules.add_alias(cat, "longhair", "long_hair")
    tagrules.add_alias(cat, "miku", "hatsune_miku")
    tagrules.add_implication(cat, "long_hair", "hair")
    tagrules.add_implication(cat, "very_long_hair", "long_hair")  # a chain to `hair`
    tagrules.blacklist_add(cat, ["watermark"])
    tagrules.trigger_add(cat, ["sks"])
    tagrules.prune_tags(cat, "width:300")  # `hair` beside `long_hair` goes: a user removal
    edits.remove_tags(cat, "width:400", ["hair"])  # implied, then removed by a person
    edits.remove_tags(cat, "width:600", ["long_hair"])  # takes the implied `hair` with it
    edits.add_tags(cat, "width:700", ["hair"])  # a person adds what no model said
    with cat.write() as s:  # a model re-run that writes the alias spelling
        replace_source_tags(s, 5, WD, [("longhair", "general", 0.55), ("smile", "general", 0.2)])
        replace_source_tags(s, 9, WD, [("miku", "character", 0.4)])
    yield cat
    cat.close()


Test = Callable[[dict[str, TagRow]], bool]


def score(tags: dict[str, TagRow], name: str) -> float:
    return tags[name].score if name in tags else -1.0


QUERIES: list[tuple[str, Test]] = [
    ("hair", lambda t: "hair" in t),
    ("-hair", lambda t: "hair" not in t),
    ("long_hair", lambda t: "long_hair" in t),
    ("longhair", lambda t: "long_hair" in t),
    ('"long hair"', lambda t: "long_hair" in t),
    ("very_long_hair", lambda t: "very_long_hair" in t),
    ("watermark", lambda t: False),
    ("-watermark", lambda t: True),
    ("meta:*", lambda t: any(r.category == "meta" for r in t.values())),
    ("miku", lambda t: "hatsune_miku" in t),
    ("character:miku", lambda t: "hatsune_miku" in t),
    ("character:*", lambda t: any(r.category == "character" for r in t.values())),
    ("general:hatsune_miku", lambda t: False),
    ("hair>=0.7", lambda t: score(t, "hair") >= 0.7),
    ("hair<0.7", lambda t: 0 <= score(t, "hair") < 0.7),
    ("long_hair<=0.55", lambda t: 0 <= score(t, "long_hair") <= 0.55),
    ("long_hair@model:wd", lambda t: "long_hair" in t and WD in t["long_hair"].sources),
    ("hair@user", lambda t: "hair" in t and "user" in t["hair"].sources),
    ("*hair", lambda t: any(n.endswith("hair") for n in t)),
    ("long*", lambda t: any(n.startswith("long") for n in t)),
    ("hai*", lambda t: any(n.startswith("hai") for n in t)),
    ("water*", lambda t: False),
    ("blue_*", lambda t: any(n.startswith("blue_") for n in t)),
    ("hair|smile", lambda t: "hair" in t or "smile" in t),
    ("hair|longhair|blue_eyes", lambda t: bool({"hair", "long_hair", "blue_eyes"} & set(t))),
    ("hair smile", lambda t: "hair" in t and "smile" in t),
    ("hair -long_hair", lambda t: "hair" in t and "long_hair" not in t),
    ("(hair|1girl) -smile", lambda t: ("hair" in t or "1girl" in t) and "smile" not in t),
    ("1girl watermark|hair", lambda t: "1girl" in t and "hair" in t),
    ("sks", lambda t: False),
    ("has:tags", lambda t: bool(t)),
    ("-has:tags", lambda t: not t),
]


@pytest.fixture(scope="module")
def view(catalog) -> dict[int, dict[str, TagRow]]:
    with catalog.session() as s:
        return {
            i: {r.name: r for r in rows}
            for i, rows in effective_tags(s, list(MODEL), implied=True).items()
        }


def test_the_catalog_went_through_every_rule(view):
    """The facts the table relies on, as a person would check them with `tags show`."""
    assert "hair" in view[1] and "hair" in view[2]  # implied, through a chain for 2
    assert "hair" not in view[3] and "hair" not in view[4]  # pruned / removed by a person
    assert "long_hair" not in view[6] and "hair" not in view[6]
    assert "hair" in view[7]  # added by a person
    assert "long_hair" in view[5] and "hair" in view[5]  # the alias spelling, read canonically
    assert "hatsune_miku" in view[9]
    assert all("watermark" not in tags for tags in view.values())
    assert view[10]["hair"].score == 0.8 and view[10]["hair"].sources == (WD,)


@pytest.mark.parametrize(("query", "test"), QUERIES, ids=[q for q, _ in QUERIES])
def test_query_means_effective_tags(catalog, view, query: str, test: Test):
    expected = {i for i, tags in view.items() if test(tags)}
    with catalog.session() as s:
        rules = TagRules.load(s)
        for form in (None, rules):
            stmt = select(Image.id).where(compile_query(query, rules=form))
            assert set(s.scalars(stmt)) == expected, (query, "rules given" if form else "stored")
        for strategy in ("sets", "probe", "auto"):
            got = page_ids(s, query, limit=100, strategy=strategy)  # type: ignore[arg-type]
            assert got == sorted(expected), (query, strategy)


def test_top_tags_count_effective_tags(catalog, view):
    with catalog.session() as s:
        top = {r["name"]: r["images"] for r in top_tags(s, limit=100)}
        expected: dict[str, int] = {}
        for tags in view.values():
            for name in tags:
                expected[name] = expected.get(name, 0) + 1
        assert top == expected
        hair = top_tags(s, where="-smile", limit=100)
        assert {r["name"]: r["images"] for r in hair}["hair"] == sum(
            1 for t in view.values() if "hair" in t and "smile" not in t
        )
        assert [r["name"] for r in top_tags(s, category="character")] == ["hatsune_miku"]
