import random

import pytest

from curator.curation.hamming_index import InvalidHashError, near_pairs
from curator.errors import CuratorError

K_VALUES = [0, 4, 8, 10]


def _flip(value: int, bits: int, rng: random.Random) -> int:
    for position in rng.sample(range(64), bits):
        value ^= 1 << position
    return value


def _corpus(n: int, seed: int) -> list[tuple[str, int]]:
    """Random hashes plus near copies at distances 0..12 of some of them."""
    rng = random.Random(seed)
    items = [(f"img{i}", rng.getrandbits(64)) for i in range(n)]
    for i in range(n // 4):
        _, source = items[rng.randrange(len(items))]
        items.append((f"copy{i}", _flip(source, rng.randint(0, 12), rng)))
    # Extreme values, a cluster sharing one substring, and several exact duplicates.
    items += [("zero", 0), ("ones", 2**64 - 1), ("zero-ish", 0b1011), ("dup-a", 42), ("dup-b", 42)]
    items += [(f"shared{i}", (rng.getrandbits(48) << 16) | 0xBEEF) for i in range(20)]
    rng.shuffle(items)
    return items


def _brute_pairs(items: list[tuple[str, int]], k: int) -> list[tuple[str, str, int]]:
    return [
        (items[i][0], items[j][0], d)
        for i in range(len(items))
        for j in range(i + 1, len(items))
        if (d := bin(items[i][1] ^ items[j][1]).count("1")) <= k
    ]


@pytest.mark.parametrize("k", K_VALUES)
def test_near_pairs_matches_brute_force(k: int) -> None:
    items = _corpus(600, seed=k)
    expected = _brute_pairs(items, k)
    assert len(expected) > 5
    assert near_pairs(items, k) == expected


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("substrings", [1, 2, 3, 4, 5, 11, 64])
def test_near_pairs_any_split_matches_brute_force(k: int, substrings: int) -> None:
    items = _corpus(300, seed=100 + k)
    assert near_pairs(items, k, substrings=substrings) == _brute_pairs(items, k)


def test_large_collection_runs() -> None:
    rng = random.Random(7)
    items = [(i, rng.getrandbits(64)) for i in range(100_000)]
    planted = [(100_000 + i, _flip(items[i][1], 3, rng)) for i in range(0, 1000, 10)]
    pairs = near_pairs(items + planted, 8)
    found = {(a, b) for a, b, _ in pairs}
    assert all((i, 100_000 + i) in found for i in range(0, 1000, 10))
    hashes = dict(items + planted)
    assert all((hashes[a] ^ hashes[b]).bit_count() == d <= 8 for a, b, d in pairs)


def test_degenerate_inputs() -> None:
    assert near_pairs([], 4) == []
    assert near_pairs([("a", 5)], 4) == []
    assert near_pairs([("a", 5), ("b", 5), ("c", 5)], 0) == [
        ("a", "b", 0),
        ("a", "c", 0),
        ("b", "c", 0),
    ]
    assert near_pairs([("a", 0), ("b", 2**64 - 1)], 64) == [("a", "b", 64)]


@pytest.mark.parametrize("bad", [-1, 2**64, "ff", 1.5])
def test_invalid_hashes_are_rejected(bad: object) -> None:
    with pytest.raises(CuratorError):
        near_pairs([("x", bad), ("y", 0)], 1)


def test_invalid_arguments() -> None:
    with pytest.raises(InvalidHashError):
        near_pairs([("a", 1), ("b", 2)], -1)
    with pytest.raises(InvalidHashError):
        near_pairs([("a", 1), ("b", 2)], 1, substrings=0)
