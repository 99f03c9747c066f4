"""Near-duplicate search over 64-bit perceptual hashes without comparing all pairs.

Multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with
Multi-Index Hashing", CVPR 2012): split the 64 bits into m substrings. If two hashes are
within distance k, then by the pigeonhole principle at least one of their substrings
differs in at most r = k // m bits (were every substring r + 1 or more apart, the total
would exceed k). So each substring is indexed in a table, candidates are the hashes whose
substring lies within r bits of the query's (r = 0 is an exact lookup, the case
m = k + 1), and every candidate is verified with a popcount.

`near_pairs` finds every close pair of a whole collection at once with numpy. Hashes
are unsigned 64-bit ints (`db.schema.to_unsigned64` converts what SQLite stores).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Hashable, Sequence
from itertools import combinations

import numpy as np

from curator.errors import CuratorError

HASH_BITS = 64
_MASK64 = (1 << HASH_BITS) - 1
_DENSE_TABLE_MAX_BITS = 22  # substring tables up to 4M slots are direct arrays
_CHUNK_CANDIDATES = 1 << 22  # candidate pairs expanded at once, to bound memory


class InvalidHashError(CuratorError, ValueError):
    """A hash was not an unsigned 64-bit integer."""


def _check_hash(value: int) -> int:
    try:
        value = operator.index(value)
    except TypeError as error:
        raise InvalidHashError(f"hash must be an integer, got {type(value).__name__}") from error
    if not 0 <= value <= _MASK64:
        hint = " (signed from SQLite? use to_unsigned64)" if value < 0 else ""
        raise InvalidHashError(f"hash {value} is not an unsigned 64-bit integer{hint}")
    return value


def _check_distance(k: int) -> int:
    k = operator.index(k)
    if k < 0:
        raise InvalidHashError(f"distance must be >= 0, got {k}")
    return k


def _substring_bounds(substrings: int) -> list[tuple[int, int]]:
    """(shift, width) of each substring; widths differ by at most one bit."""
    base, extra = divmod(HASH_BITS, substrings)
    bounds, shift = [], 0
    for index in range(substrings):
        width = base + (1 if index < extra else 0)
        bounds.append((shift, width))
        shift += width
    return bounds


def _flip_masks(width: int, radius: int) -> list[int]:
    """Every `width`-bit value with at most `radius` bits set, fewest bits first."""
    masks = []
    for bits in range(min(radius, width) + 1):
        for positions in combinations(range(width), bits):
            masks.append(sum(1 << p for p in positions))
    return masks


def _ball_size(width: int, radius: int) -> int:
    return sum(math.comb(width, bits) for bits in range(min(radius, width) + 1))


if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def _popcount(values: np.ndarray) -> np.ndarray:
        return np.bitwise_count(values).astype(np.int64)

else:
    _BYTE_BITS = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.int64)

    def _popcount(values: np.ndarray) -> np.ndarray:
        as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8)
        return _BYTE_BITS[as_bytes].reshape(-1, 8).sum(axis=1)


def _choose_substrings(n: int, k: int) -> int | None:
    """Substring count with the least estimated work for n uniform hashes; None: brute force.

    Work ~ probes * n (one table lookup per hash and probe) plus candidate pairs, each
    weighted for the gathers and popcount that verify it.
    """
    best, best_cost = None, n * (n - 1) / 2 * 4.0
    for m in range(1, min(k + 1, HASH_BITS) + 1):
        radius = k // m
        cost = 0.0
        for _, width in _substring_bounds(m):
            probes = _ball_size(width, radius)
            cost += probes * n + 4.0 * probes * n * n / 2.0 ** (width + 1)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


_Found = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]  # a, b, distance


def _brute_force_pairs(hashes: np.ndarray, k: int) -> _Found:
    n = len(hashes)
    rows = max(1, _CHUNK_CANDIDATES // max(n, 1))
    found_a, found_b, found_d = [], [], []
    for start in range(0, n, rows):
        block = np.arange(start, min(start + rows, n))
        distances = _popcount(hashes[block, None] ^ hashes[None, :]).reshape(len(block), n)
        a, b = np.nonzero((distances <= k) & (np.arange(n)[None, :] > block[:, None]))
        found_a.append(block[a])
        found_b.append(b)
        found_d.append(distances[a, b])
    return found_a, found_b, found_d


class _SubstringTable:
    """Items sorted by one substring, and the run of positions holding each value."""

    def __init__(self, values: np.ndarray, width: int):
        self.order = np.argsort(values, kind="stable")
        self.sorted = values[self.order]
        self._edges = None
        if width <= _DENSE_TABLE_MAX_BITS:  # direct lookup: run of v is edges[v]..edges[v+1]
            counts = np.bincount(values.astype(np.intp), minlength=1 << width)
            dtype = np.int32 if len(values) < 2**31 else np.int64
            self._edges = np.zeros((1 << width) + 1, dtype=dtype)
            np.cumsum(counts, out=self._edges[1:])

    def runs(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start position and length of the run of each target value."""
        if self._edges is not None:
            index = targets.astype(np.intp)
            starts = self._edges[index]
            return starts.astype(np.int64), (self._edges[index + 1] - starts).astype(np.int64)
        starts = np.searchsorted(self.sorted, targets, "left")
        return starts, np.searchsorted(self.sorted, targets, "right") - starts


def _mih_pairs(hashes: np.ndarray, k: int, substrings: int) -> _Found:
    radius = k // substrings
    bounds = _substring_bounds(substrings)
    parts = [(hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1) for shift, width in bounds]
    found_a, found_b, found_d = [], [], []
    for index, (_, width) in enumerate(bounds):
        table = _SubstringTable(parts[index], width)
        for mask in _flip_masks(width, radius):
            # Queries walk in sorted order, so lookups of value ^ mask stay cache-friendly.
            starts, counts = table.runs(table.sorted ^ np.uint64(mask))
            if mask:
                # Of the two ends of a pair x, x ^ mask, only the one with the mask's top
                # bit clear asks, so each pair is found once.
                top = np.uint64(1 << (mask.bit_length() - 1))
                counts[(table.sorted & top) != 0] = 0
            hit = np.flatnonzero(counts)
            queries, starts, counts = table.order[hit], starts[hit], counts[hit]
            ends = np.cumsum(counts)
            begin = 0
            while begin < len(hit):
                # Expand a slice of queries whose candidates fit in one chunk.
                base = ends[begin - 1] if begin else 0
                end = int(np.searchsorted(ends, base + _CHUNK_CANDIDATES, "right"))
                end = max(begin + 1, end)
                span = counts[begin:end]
                a = np.repeat(queries[begin:end], span)
                offsets = np.arange(len(a)) - np.repeat(ends[begin:end] - span - base, span)
                b = table.order[np.repeat(starts[begin:end], span) + offsets]
                begin = end
                if not mask:  # within one run: each unordered pair once
                    keep = b > a
                    a, b = a[keep], b[keep]
                # A pair close in several substrings belongs to the first of them.
                for earlier in parts[:index]:
                    keep = _popcount(earlier[a] ^ earlier[b]) > radius
                    a, b = a[keep], b[keep]
                distance = _popcount(hashes[a] ^ hashes[b])
                keep = distance <= k
                a, b = a[keep], b[keep]
                found_a.append(np.minimum(a, b))
                found_b.append(np.maximum(a, b))
                found_d.append(distance[keep])
    return found_a, found_b, found_d


def near_pairs(
    items: Sequence[tuple[Hashable, int]], k: int, substrings: int | None = None
) -> list[tuple[Hashable, Hashable, int]]:
    """Every pair of items whose hashes are within Hamming distance k, each pair once.

    Returns (id_a, id_b, distance) with id_a the earlier of the two in `items`, sorted by
    the positions of a then b. `substrings` overrides the split chosen from a cost
    estimate for len(items) uniform hashes (small inputs are compared all-pairs).
    """
    k = _check_distance(k)
    ids = [item_id for item_id, _ in items]
    hashes = np.array([_check_hash(value) for _, value in items], dtype=np.uint64)
    if len(ids) < 2:
        return []
    if substrings is None:
        substrings = _choose_substrings(len(ids), k)
    elif not 1 <= substrings <= HASH_BITS:
        raise InvalidHashError(f"substrings must be 1..{HASH_BITS}, got {substrings}")
    if substrings is not None:
        radius = k // substrings
        probes = sum(_ball_size(width, radius) for _, width in _substring_bounds(substrings))
        if probes >= len(ids):  # probing would cost more than comparing everything
            substrings = None
    if substrings is None:
        found = _brute_force_pairs(hashes, k)
    else:
        found = _mih_pairs(hashes, k, substrings)
    empty = [np.zeros(0, dtype=np.int64)]
    a, b, distance = (np.concatenate(parts + empty) for parts in found)
    order = np.lexsort((b, a))
    return [
        (ids[i], ids[j], int(d))
        for i, j, d in zip(
            a[order].tolist(), b[order].tolist(), distance[order].tolist(), strict=True
        )
    ]
