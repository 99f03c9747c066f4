"""Export file names: no way out of the export folder, portable, unique and stable."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from curator.errors import ExportError
from curator.export.filenames import is_reserved, safe_join, safe_name, safe_stem, unique_names

NASTY = [
    "..",
    ".",
    "...",
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "/absolute/path",
    "C:\\Users\\x",
    "a/b",
    "CON",
    "con.txt",
    "LPT9",
    "COM¹",
    "nul.tar.gz",
    " .hidden",
    "trailing. ",
    "tab\there",
    "nul\x00byte",
    "bidi\u202eexe.png",
    "zero\u200bwidth",
    "line\u2028sep",
    'quote"s<and>pipes|?*',
    "[glob]*",
    "",
    "   ",
]


@pytest.mark.parametrize("text", NASTY)
def test_safe_name_is_one_portable_component(text: str, tmp_path: Path) -> None:
    name = safe_name(text)
    assert name and name not in (".", "..")
    assert not any(ch in name for ch in '/\\<>:"|?*[]')
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name)
    assert name == name.strip(" .")
    assert not is_reserved(name)
    # It really is a single entry right inside the folder.
    (tmp_path / name).write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_safe_name_keeps_ordinary_names() -> None:
    assert safe_name("My Cat (2).final") == "My Cat (2).final"
    assert safe_name("sks dog") == "sks dog"
    assert safe_name("hatsune_miku") == "hatsune_miku"


def test_reserved_windows_names_get_a_prefix() -> None:
    assert safe_name("CON") == "_CON"
    assert safe_name("aux.png") == "_aux.png"
    assert safe_name("CONSOLE") == "CONSOLE"  # only the exact device names


def test_nfc_normalisation() -> None:
    decomposed = "Cafe\u0301"  # e + combining acute
    assert safe_name(decomposed) == "Café"
    assert safe_name(decomposed) == safe_name("Café")


def test_length_is_limited_in_utf8_bytes_without_breaking_characters() -> None:
    name = safe_name("é" * 200, max_bytes=51)
    assert len(name.encode("utf-8")) <= 51
    assert name == "é" * 25  # 25 two-byte characters; the half character is dropped


def test_fallback_for_names_with_nothing_left() -> None:
    assert safe_name("..", fallback="class") == "class"
    assert safe_name("/", fallback="../x") == "x"


def test_safe_stem_drops_folders_and_extension() -> None:
    assert safe_stem("photos/My Cat.JPG") == "My Cat"
    assert safe_stem("..\\..\\evil.png") == "evil"
    assert safe_stem("..png") == "png"  # a leading-dot name has no extension
    assert safe_stem("...") == "image"
    assert safe_stem(".bashrc") == "bashrc"


def test_unique_names_suffix_only_collisions_case_insensitively() -> None:
    bases = {"k1": "cat", "k2": "Cat", "k3": "dog"}
    hashes = {"k1": "aaaa1111bbbb", "k2": "cccc2222dddd", "k3": "eeee"}
    names = unique_names(bases, hashes.__getitem__)
    assert names == {"k1": "cat_aaaa1111", "k2": "Cat_cccc2222", "k3": "dog"}


def test_unique_names_are_stable_when_other_items_come_and_go() -> None:
    hashes = {"a": "1" * 64, "b": "2" * 64, "c": "3" * 64}
    three = unique_names({"a": "x", "b": "x", "c": "x"}, hashes.__getitem__)
    two = unique_names({"a": "x", "c": "x"}, hashes.__getitem__)
    assert two == {"a": three["a"], "c": three["c"]}


def test_unique_names_lengthen_suffixes_that_share_a_prefix() -> None:
    hashes = {"a": "deadbeef0001", "b": "deadbeef0002"}
    names = unique_names({"a": "x", "b": "x"}, hashes.__getitem__)
    assert len({n.casefold() for n in names.values()}) == 2


def test_unique_names_avoid_a_suffixed_name_equal_to_another_base() -> None:
    hashes = {"a": "aaaaaaaa99", "b": "bbbbbbbb99", "c": "cccccccc99"}
    names = unique_names({"a": "x", "b": "x", "c": "x_aaaaaaaa"}, hashes.__getitem__)
    assert len({n.casefold() for n in names.values()}) == 3


def test_safe_join_refuses_to_leave_the_root(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a", "b.png") == tmp_path.resolve() / "a" / "b.png"
    for bad in ("..", "../x", "a/../../x", "/etc", ""):
        with pytest.raises(ExportError):
            safe_join(tmp_path, bad)
