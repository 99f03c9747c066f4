"""Bulk operations on the filtered set: what each changes, counted exactly, and applied
as one undoable edit by the library's query-wide functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curator.curation import edits, review
from curator.curation.edits import EditResult
from curator.errors import UsageError

if TYPE_CHECKING:  # the catalog's type only: tui/ calls the library, not db/
    from db.engine import Catalog

Canonical = Callable[[str], str]

CHOICES = [
    ("add", "Add a tag"),
    ("remove", "Remove a tag"),
    ("replace", "Replace a tag with another"),
    ("accept", "Accept all"),
    ("reject", "Reject all"),
]


@dataclass(frozen=True, slots=True)
class BulkOp:
    changes_query: str  # selects exactly the filtered images this operation changes
    describe: Callable[[int], str]  # the confirmation, given that count
    apply: Callable[[Catalog], EditResult]


def within(query: str, condition: str) -> str:
    return f"({query}) {condition}" if query.strip() else condition


def quoted(tag: str) -> str:
    """A tag as a query term, whatever characters it has."""
    tag = tag.strip().replace(" ", "_")
    if not tag or '"' in tag:
        raise UsageError(f"cannot use {tag!r} as a tag in a bulk operation")
    return f'"{tag}"'


def tag_op(query: str, op: str, tag: str, canonical: Canonical = str.strip) -> BulkOp:
    """`canonical` maps a typed tag to the name the edit stores (aliases resolved), so
    the count is of the tag that will change."""
    term = quoted(canonical(tag))
    if op == "add":
        return BulkOp(
            within(query, f"-{term}"),
            lambda n: f"Add {term} to {n:,} images (the filtered ones that do not have it)",
            lambda catalog: edits.add_tags(catalog, query, [tag]),
        )
    return BulkOp(
        within(query, term),
        lambda n: f"Remove {term} from {n:,} images (the filtered ones that have it)",
        lambda catalog: edits.remove_tags(catalog, query, [tag]),
    )


def replace_op(query: str, old: str, new: str, canonical: Canonical = str.strip) -> BulkOp:
    old_term, new_term = quoted(canonical(old)), quoted(canonical(new))
    return BulkOp(
        within(query, old_term),
        lambda n: f"Replace {old_term} with {new_term} on {n:,} images (the filtered ones with it)",
        lambda catalog: edits.replace_tags(catalog, query, old, new),
    )


def review_op(query: str, op: str) -> BulkOp:
    status = review.ACCEPTED if op == "accept" else review.REJECTED
    verb = "Accept" if op == "accept" else "Reject"
    return BulkOp(
        within(query, f"status!={status}"),
        lambda n: f"{verb} {n:,} images (the filtered ones not already {status})",
        lambda catalog: review.set_status(catalog, query, status),
    )
