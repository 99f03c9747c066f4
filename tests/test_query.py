"""The query language: every kind of term against a small hand-built catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from curator.cli import main
from curator.errors import QueryError
from curator.query.compile import compile_query, page_ids, select_images
from curator.tags.view import USER, USER_REMOVED, TagRules
from db import open_catalog
from db.schema import (
    Caption,
    Detection,
    Embedding,
    File,
    Generation,
    Image,
    ImageTag,
    Score,
    Tag,
)

WD14 = "model:wd14"
OTHER = "model:other"
ALL = set("abcdefghij")

TAGS = {
    "cat": "general",
    "dog": "general",
    "bird": "general",
    "blue_eyes": "general",
    "blue_sky": "general",
    "red_eyes": "general",
    "long_hair": "general",
    "monochrome": "general",
    "hatsune_miku_(cosplay)": "general",
    "hatsune_miku": "character",
    "kagamine_rin": "character",
    "vocaloid": "copyright",
    "artist_x": "artist",
    "re:zero": "copyright",
}

# name: width, height, format, bytes, status, folder (None: no file), present
IMAGES = {
    "a": (512, 768, "PNG", 1_500_000, "accepted", "cats", True),
    "b": (768, 512, "JPEG", 300_000, "pending", "dogs", True),
    "c": (1024, 1024, "WEBP", 3_000_000, "rejected", "cats/sub", True),
    "d": (1000, 980, "PNG", 2_500_000, "pending", "cats", False),
    "e": (640, 1280, "PNG", 800_000, "pending", "other", True),
    "f": (2000, 1000, "PNG", 5_000_000, "accepted", None, False),
    "g": (800, 800, "GIF", 400_000, "pending", "dogs", True),
    "h": (100, 300, "BMP", 10_000, "pending", "dogs", True),
    "i": (1200, 900, "JPEG", 1_200_000, "pending", "", True),
    "j": (900, 1200, "TIFF", 2_000_000, "pending", "", True),
}

# name: [(tag, source, score)]
IMAGE_TAGS = {
    "a": [("cat", WD14, 0.9), ("blue_eyes", WD14, 0.7), ("long_hair", USER, None)],
    "b": [("cat", WD14, 0.4), ("dog", WD14, 0.95)],
    "c": [
        ("dog", USER, None),
        ("blue_sky", "sidecar", None),
        ("hatsune_miku", WD14, 0.8),
        ("vocaloid", WD14, 0.85),
        ("re:zero", USER, None),
    ],
    # The user removed `cat` here: a model re-run's row must stay hidden.
    "d": [("cat", WD14, 0.7), ("cat", USER_REMOVED, None), ("monochrome", WD14, 0.6)],
    "e": [
        ("kagamine_rin", USER, None),
        ("hatsune_miku_(cosplay)", WD14, 0.5),
        ("red_eyes", WD14, 0.3),
        ("cat", WD14, 0.2),
        ("cat", USER, None),
    ],
    "g": [
        ("bird", WD14, 0.99),
        ("blue_eyes", USER, None),
        ("long_hair", WD14, 0.65),
        ("monochrome", USER_REMOVED, None),
    ],
    "h": [("artist_x", WD14, 0.9), ("dog", WD14, 0.7), ("dog", "sidecar", None)],
    "i": [("cat", WD14, 0.61), ("cat", OTHER, 0.3)],
    "j": [("long_hair", WD14, 0.55), ("blue_sky", WD14, 0.9)],
}

RATING = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 0, "g": 1, "h": 0, "i": 0}
SCORES = {
    "a": {"aesthetic": 6.5, "nsfw": 0.05},
    "b": {"aesthetic": 4.0, "nsfw": 0.3},
    "c": {"aesthetic": 5.0},
    "h": {"aesthetic": 7.2},
}
CAPTIONS = {
    "a": "A cat in a Forest",
    "c": "portrait of miku",
    "d": "100% done_right",
    "h": "Dog in the snow",
}
GENERATIONS = {
    "b": dict(
        prompt="a castle on a hill",
        negative_prompt="lowres, bad anatomy",
        steps=30,
        sampler="Euler a",
        cfg_scale=7.0,
        seed=123,
        model_hash="2700c435",
        model="anything-v3",
    ),
    "e": dict(
        prompt="Castle at night",
        steps=20,
        sampler="DPM++ 2M Karras",
        cfg_scale=5.5,
        seed=456,
        model_hash="abcdef12",
        model="other-model",
    ),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("query")


@pytest.fixture(scope="module")
def root(home: Path) -> Path:
    (home / "root" / "cats").mkdir(parents=True)
    return home / "root"


@pytest.fixture(scope="module")
def db_path(home: Path, new_catalog_spec) -> Path:
    return new_catalog_spec(home / "catalog.db")


@pytest.fixture(scope="module")
def filled(db_path, root):
    """The catalog above, built through the ORM once for the module (tests only read it)."""
    with open_catalog(str(db_path)) as catalog:
        _fill(catalog, root)
        yield catalog


def _fill(catalog, root: Path) -> None:
    with catalog.write() as s:
        tags = {name: Tag(name=name, category=cat) for name, cat in TAGS.items()}
        s.add_all(tags.values())
        images = {}
        for name, (w, h, fmt, size, status, folder, present) in IMAGES.items():
            image = Image(
                sha256=name, bytes=size, width=w, height=h, format=fmt, mode="RGB", status=status
            )
            s.add(image)
            images[name] = image
            if folder is not None:
                where = root / folder if folder else root
                ext = fmt.lower()
                s.add(
                    File(
                        path=str(where / f"{name}.{ext}"),
                        folder=str(where),
                        image=image,
                        size=size,
                        mtime_ns=0,
                        present=present,
                    )
                )
        s.flush()
        images["d"].duplicate_of = images["a"].id
        for name, rows in IMAGE_TAGS.items():
            for tag, source, score in rows:
                s.add(
                    ImageTag(
                        image_id=images[name].id, tag_id=tags[tag].id, source=source, score=score
                    )
                )
        for name, value in RATING.items():
            s.add(Score(image_id=images[name].id, name="rating", value=value))
        for name, scores in SCORES.items():
            s.add_all(Score(image_id=images[name].id, name=k, value=v) for k, v in scores.items())
        for name, text in CAPTIONS.items():
            s.add(Caption(image_id=images[name].id, kind="caption", source="blip", text=text))
        for name, params in GENERATIONS.items():
            s.add(Generation(image_id=images[name].id, source="a1111", raw="", **params))
        s.add(
            Detection(
                image_id=images["c"].id,
                detector="faces",
                label="face",
                score=0.9,
                x=1,
                y=2,
                w=3,
                h=4,
            )
        )
        s.add(Embedding(image_id=images["g"].id, model="clip", dim=1, vector=b"\0\0\0\0"))


def names(catalog, query: str, base: Path | None = None) -> set[str]:
    stmt = select(Image.sha256).where(compile_query(query, base=str(base) if base else None))
    with catalog.session() as s:
        return set(s.scalars(stmt))


CASES = [
    # tags, NOT, OR, grouping; OR binds tighter than the implicit AND
    ("", ALL),
    ("cat", {"a", "b", "e", "i"}),
    ("-cat", {"c", "d", "f", "g", "h", "j"}),
    ("cat|dog", {"a", "b", "c", "e", "h", "i"}),
    ("cat | dog", {"a", "b", "c", "e", "h", "i"}),
    ("cat dog", {"b"}),
    ("cat -dog", {"a", "e", "i"}),
    ("cat|dog -blue_eyes", {"b", "c", "e", "h", "i"}),
    ("cat | bird long_hair", {"a", "g"}),
    ("(cat|bird) long_hair", {"a", "g"}),
    ("cat (bird | long_hair)", {"a"}),
    ("-(cat|dog)", {"d", "f", "g", "j"}),
    ("-(-cat)", {"a", "b", "e", "i"}),
    ("(cat -(dog|blue_eyes)) | bird", {"e", "g", "i"}),
    ("cat|dog|bird", {"a", "b", "c", "e", "g", "h", "i"}),
    # user-removed tags are hidden, whatever source still has them, in every combination
    ("monochrome", {"d"}),
    ("-monochrome", ALL - {"d"}),
    ("cat monochrome", set()),
    ("cat -blue_eyes", {"b", "e", "i"}),
    ("-cat -monochrome", {"c", "f", "g", "h", "j"}),
    ("-(monochrome|cat)", {"c", "f", "g", "h", "j"}),
    ("(cat|monochrome) -dog", {"a", "d", "e", "i"}),
    ("(cat -dog)|monochrome", {"a", "d", "e", "i"}),
    ("-(cat blue_eyes)", ALL - {"a"}),
    ("cat long_hair|bird", {"a"}),
    ("(cat long_hair) | (monochrome format:png)", {"a", "d"}),
    ("-has:tags", {"f"}),
    ("*", ALL - {"f"}),
    # wildcards, quoting, parentheses inside tags, a tag with a colon
    ("blue_*", {"a", "c", "g", "j"}),
    ("*_eyes", {"a", "e", "g"}),
    ("blue_* -blue_sky", {"a", "g"}),
    ('"long hair"', {"a", "g", "j"}),
    ("hatsune_miku_(cosplay)", {"e"}),
    ("(hatsune_miku_(cosplay))", {"e"}),
    ('"re:zero"', {"c"}),
    ('"blue_*"', set()),
    # score thresholds on the tag's best score (by hand = 1.0)
    ("cat>=0.6", {"a", "e", "i"}),
    ("cat>0.9", {"e"}),
    ("cat<0.5", {"b"}),
    ("cat<=0.61", {"b", "i"}),
    ("long_hair>=0.6", {"a", "g"}),
    ('"long hair"<0.6', {"j"}),
    # sources, as a field and as a tag qualifier
    ("cat@user", {"e"}),
    ("cat@model:other", {"i"}),
    ("cat@model", {"a", "b", "e", "i"}),
    ("cat@model:wd14>=0.5", {"a", "i"}),
    ("cat@model:wd14<0.5", {"b", "e"}),
    ("source:user", {"a", "c", "e", "g"}),
    ("source:sidecar", {"c", "h"}),
    ("source:model:other", {"i"}),
    ("source:model:wd*", {"a", "b", "c", "d", "e", "g", "h", "i", "j"}),
    ("source:user-removed", {"d", "g"}),
    ("source:sidecar|model:other", {"c", "h", "i"}),
    # categories
    ("character:*", {"c", "e"}),
    ("character:hatsune_miku", {"c"}),
    ("character:hatsune_*", {"c"}),
    ("character:hatsune_miku|kagamine_rin", {"c", "e"}),
    ("character:hatsune_miku>=0.9", set()),
    ("character:hatsune_miku>=0.75", {"c"}),
    ("copyright:vocaloid", {"c"}),
    ("artist:*", {"h"}),
    ("general:hatsune_*", {"e"}),
    ("Character:kagamine_rin", {"e"}),
    # ratings (the tagger's score row)
    ("rating:general", {"a", "e", "h", "i"}),
    ("rating:general|sensitive", {"a", "b", "e", "g", "h", "i"}),
    ("rating:e", {"d"}),
    ("rating:q|explicit", {"c", "d"}),
    ("-rating:explicit", ALL - {"d"}),
    ("rating<=sensitive", {"a", "b", "e", "g", "h", "i"}),
    ("rating>sensitive", {"c", "d"}),
    ("rating:general | cat", {"a", "b", "e", "h", "i"}),
    # size, shape, format, file size
    ("width>=1000", {"c", "d", "f", "i"}),
    ("height<600", {"b", "h"}),
    ("width:512", {"a"}),
    ("width=512|768", {"a", "b"}),
    ("width!=512 width<700", {"e", "h"}),
    ("aspect:portrait", {"a", "e", "h", "j"}),
    ("aspect:square", {"c", "d", "g"}),
    ("aspect:landscape", {"b", "f", "i"}),
    ("aspect:square|landscape", {"b", "c", "d", "f", "g", "i"}),
    ("aspect>1.5", {"f"}),
    ("aspect>=1.5", {"b", "f"}),
    ("aspect=4:3", {"i"}),
    ("aspect:3/4", {"j"}),
    ("aspect>=16:9", {"f"}),
    ("aspect<0.5", {"h"}),
    ("format:png", {"a", "d", "e", "f"}),
    ("format:jpg", {"b", "i"}),
    ("format:JPEG", {"b", "i"}),
    ("format:webp|gif", {"c", "g"}),
    ("format:tif", {"j"}),
    ("format!=png", {"b", "c", "g", "h", "i", "j"}),
    ("bytes<2MB", {"a", "b", "e", "g", "h", "i"}),
    ("bytes<=2MB", {"a", "b", "e", "g", "h", "i", "j"}),
    ("bytes<2MiB", {"a", "b", "e", "g", "h", "i", "j"}),
    ("bytes>=500KB", {"a", "c", "d", "e", "f", "i", "j"}),
    ("bytes>2.5mb", {"c", "f"}),
    ("bytes<10001", {"h"}),
    # named scores
    ("score(aesthetic)>=5", {"a", "c", "h"}),
    ("score(nsfw)<0.2", {"a"}),
    ("-score(nsfw)>=0.2", ALL - {"b"}),
    # captions and generation parameters
    ('caption~"forest"', {"a"}),
    ("caption~FOREST", {"a"}),
    ('caption~"in"', {"a", "h"}),
    ('caption:"of miku"', {"c"}),
    ('caption~"100%"', {"d"}),
    ('caption~"e_r"', {"d"}),
    ('caption~"e_s"', set()),
    ('caption~"cat*forest"', set()),
    ("caption~cat*forest", {"a"}),
    ('prompt~"castle"', {"b", "e"}),
    ("negative~lowres", {"b"}),
    ('sampler:"Euler a"', {"b"}),
    ('sampler:"euler a"', {"b"}),
    ("sampler:DPM*", {"e"}),
    ("steps>=30", {"b"}),
    ("steps<30", {"e"}),
    ("steps:20|30", {"b", "e"}),
    ("cfg>=7", {"b"}),
    ("cfg<6", {"e"}),
    ("seed:123", {"b"}),
    ("model_hash:2700c435", {"b"}),
    ("model_hash:2700*", {"b"}),
    ("model:anything-v3", {"b"}),
    ("-has:infotext", ALL - {"b", "e"}),
    # review state and what an image has
    ("status:accepted", {"a", "f"}),
    ("status:pending|rejected", ALL - {"a", "f"}),
    ("status!=pending", {"a", "c", "f"}),
    ("is:duplicate", {"d"}),
    ("is:missing", {"d", "f"}),
    ("-is:missing", ALL - {"d", "f"}),
    ("has:caption", {"a", "c", "d", "h"}),
    ("has:infotext", {"b", "e"}),
    ("has:faces", {"c"}),
    ("has:embedding", {"g"}),
    ("has:tags", ALL - {"f"}),
    ("has:caption|faces", {"a", "c", "d", "h"}),
    # combinations
    ("cat rating:general aspect:portrait score(aesthetic)>5", {"a"}),
    ("(cat | dog) -(rating:sensitive | rating:questionable)", {"a", "e", "h", "i"}),
    ("cat|dog width>=700 -status:rejected", {"b", "i"}),
    ("long_hair|blue_sky format:tiff|gif bytes<=2MB", {"g", "j"}),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[q or "(empty)" for q, _ in CASES])
def test_query_selects(filled, query, expected):
    assert names(filled, query) == expected


def reference_page(session, query: str, limit: int, after_id: int, base: str | None = None):
    stmt = (
        select(Image.id)
        .where(compile_query(query, base=base), Image.id > after_id)
        .order_by(Image.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


PAGE_QUERIES = [q for q, _ in CASES] + ["folder:cats|dogs cat", "folder:. -cat long_hair|bird"]


@pytest.mark.parametrize("strategy", ["auto", "probe", "sets"])
def test_pages_hold_the_same_ids_as_the_compiled_query(filled, root, strategy):
    """Every page, walked with `after_id`, whichever plan runs it."""
    with filled.session() as s:
        for query in PAGE_QUERIES:
            for limit in (3, 100):
                after, seen = 0, []
                while True:
                    page = page_ids(
                        s, query, limit=limit, after_id=after, base=str(root), strategy=strategy
                    )
                    assert page == reference_page(s, query, limit, after, str(root)), query
                    if not page:
                        break
                    seen += page
                    after = page[-1]
                expected = reference_page(s, query, 1000, 0, str(root))
                assert seen == expected, (query, limit)


def test_folder_terms_are_relative_to_the_base_folder(filled, root):
    assert names(filled, "folder:cats", base=root) == {"a", "c"}  # d's file is missing
    assert names(filled, "folder:cats/", base=root) == {"a", "c"}
    assert names(filled, "folder:cats/sub", base=root) == {"c"}
    assert names(filled, "folder:.", base=root) == ALL - {"d", "f"}
    assert names(filled, "folder:cats|dogs cat", base=root) == {"a", "b"}
    assert names(filled, f'folder:"{root / "dogs"}"') == {"b", "g", "h"}


ERRORS = [
    ("(cat", "unbalanced parenthesis", 1),
    ("cat dog)", "unbalanced parenthesis", 8),
    ("(cat (dog)", "unbalanced parenthesis", 1),
    ("()", "empty parentheses", 1),
    ("foo:bar", "unknown field 'foo'", 1),
    ("cat re:zero", "unknown field 're'", 5),
    ("cat width>=abc", "expected a number after '>='", 12),
    ("width>=", "expected a number after '>='", 8),
    ("score(nsfw)<x", "expected a number after '<'", 13),
    ("cat>=high", "expected a number after '>='", 6),
    ('caption~"forest', "unterminated quote", 9),
    ("caption~", "expected text after '~'", 9),
    ("cat |", "expected a term after '|'", 5),
    ("| cat", "expected a term before '|'", 1),
    ("cat - dog", "expected a term after '-'", 5),
    ("rating:safe", "unknown rating 'safe'", 8),
    ("rating:general|safe", "unknown rating 'safe'", 16),
    ("status:done", "unknown status 'done'", 8),
    ("aspect:round", "unknown aspect 'round'", 8),
    ("has:wings", "unknown 'has:' value 'wings'", 5),
    ("is:pretty", "unknown state 'pretty'", 4),
    ("bytes<2XB", "expected a size after '<'", 7),
    ("cat=0.5", "a tag's score takes >=, >, <= or <", 1),
    ("width~3", "'width' cannot be used with '~'", 1),
    ("status>1", "'status' cannot be used with '>'", 1),
    ("cat~x", "'~' (contains) works on caption", 1),
    ("width@user>3", "'@user' qualifies a tag", 1),
]


@pytest.mark.parametrize(("query", "message", "column"), ERRORS, ids=[q for q, _, _ in ERRORS])
def test_query_errors_name_the_column(query, message, column):
    with pytest.raises(QueryError) as info:
        compile_query(query)
    assert message in str(info.value)
    assert info.value.column == column
    assert str(info.value).endswith(f"(at column {column})")


def test_expression_works_in_counts_joins_and_tag_subqueries(filled):
    expr = compile_query("cat|dog -rating:sensitive")
    with filled.session() as s:
        assert s.scalar(select(func.count()).select_from(Image).where(expr)) == 5
        # Joined with files (as `ls` does): one row per present file.
        paths = s.scalars(
            select(File.path).join(Image, File.image_id == Image.id).where(expr, File.present)
        ).all()
        assert sorted(Path(p).stem for p in paths) == ["a", "c", "e", "h", "i"]
        # Inside a statement over image_tags (tag counts of a selection): the query's own
        # image_tags aliases must not correlate with the outer image_tags.
        counts = dict(
            s.execute(
                select(Tag.name, func.count())
                .join(ImageTag, ImageTag.tag_id == Tag.id)
                .where(ImageTag.image_id.in_(select(Image.id).where(compile_query("dog"))))
                .group_by(Tag.name)
            ).all()
        )
        assert counts["dog"] == 4  # c (user), b, h (model), h (sidecar)
        assert counts["artist_x"] == 1 and "cat" in counts
        images = s.scalars(select_images("format:png -cat")).all()
        assert [i.sha256 for i in images] == ["d", "f"]


def test_tag_queries_use_the_covering_index(filled):
    """A tag term is answered from image_tags(tag_id, image_id, score), not a table scan."""
    with filled.session() as s:
        rules = TagRules.load(s)
    where = compile_query("cat>=0.5 -dog", rules=rules)
    stmt = select(Image.id).where(where).order_by(Image.id).limit(100)
    with filled.engine.connect() as conn:
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " | ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "ix_image_tags_tag_image_score" in plan
    assert "SCAN image_tags" not in plan


def run(db: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_ls_lists_matching_files(filled, db_path, root, monkeypatch):
    out = run(db_path, "ls", "--", "cat", "-rating:sensitive").output.split()
    assert sorted(Path(p).stem for p in out) == ["a", "e", "i"]
    # Several arguments are one query; `folder:` is relative to the working folder.
    monkeypatch.chdir(root)
    rows = json.loads(
        run(db_path, "ls", "folder:cats", "rating:general|questionable", "--json").output
    )
    assert sorted(Path(r["path"]).stem for r in rows) == ["a", "c"]
    assert run(db_path, "ls", "caption~forest").output.split() == [str(root / "cats" / "a.png")]


def test_ls_reports_a_bad_query_on_one_line(filled, db_path):
    result = run(db_path, "ls", "cat (dog", ok=False)
    assert result.exit_code != 0
    assert (
        result.output.strip() == "error: unbalanced parenthesis: '(' is never closed (at column 5)"
    )


def test_tag_logic_matches_the_effective_tags_of_every_image(catalog):
    """Random AND/OR/NOT queries over random tags, removals included, against tagview."""
    import random

    from curator.tags.view import effective_tags

    rng = random.Random(7)
    pool = ["red_a", "red_b", "blue_a", "blue_b", "green"]
    with catalog.write() as s:
        tags = {name: Tag(name=name) for name in pool}
        s.add_all(tags.values())
        for n in range(60):
            image = Image(sha256=f"{n:02d}", bytes=1, width=1, height=1, format="PNG", mode="RGB")
            s.add(image)
            s.flush()
            for name in rng.sample(pool, rng.randint(0, 4)):
                sources = rng.sample([WD14, USER, "sidecar", USER_REMOVED], rng.randint(1, 2))
                for source in sources:
                    score = None if source in (USER, USER_REMOVED) else rng.random()
                    s.add(
                        ImageTag(
                            image_id=image.id, tag_id=tags[name].id, source=source, score=score
                        )
                    )
    with catalog.session() as s:
        ids = dict(s.execute(select(Image.id, Image.sha256)).all())
        have = {ids[i]: {t.name for t in rows} for i, rows in effective_tags(s, list(ids)).items()}

    def term():
        name = rng.choice([*pool, "red_*", "*_b"])
        prefix = name.split("*")[0]
        suffix = name.split("*")[-1]
        return name, lambda tags: any(t.startswith(prefix) and t.endswith(suffix) for t in tags)

    def query(depth: int):
        if depth == 0 or rng.random() < 0.3:
            text, test = term()
        else:
            parts = [query(depth - 1) for _ in range(rng.randint(2, 3))]
            combine = all if rng.random() < 0.5 else any
            text = (" " if combine is all else " | ").join(f"({t})" for t, _ in parts)

            def test(tags, parts=parts, combine=combine):
                return combine(f(tags) for _, f in parts)

        if rng.random() < 0.3:
            return f"-({text})", lambda tags, f=test: not f(tags)
        return text, test

    for _ in range(60):
        text, test = query(3)
        expected = {name for name, tags in have.items() if test(tags)}
        assert names(catalog, text) == expected, text
        with catalog.session() as s:
            walked = page_ids(s, text, limit=len(ids), strategy="probe")
        assert walked == sorted(i for i, name in ids.items() if name in expected), text
