"""Tag edits, rule changes and review changes, each recorded with exactly what undoes it.

The pieces live in modules of one concern each; this module keeps the names callers
use in one place:

- `curator.curation.changeset`: `ChangeSet` (notes every change of one transaction),
  `EditResult`, `Author` (who made an edit), selection helpers.
- `curator.curation.tag_edits`: add, remove, replace and rename tags on selections.
- `curator.curation.caption_edits`: a person's captions.
- `curator.curation.history`: list edits, undo and redo them.
"""

from __future__ import annotations

from curator.curation.caption_edits import set_caption
from curator.curation.changeset import (
    CHUNK,
    IMAGE_COLUMNS,
    Author,
    ChangeSet,
    EditResult,
    TagRowData,
    chunks,
    selected_ids,
    tag_rows,
)
from curator.curation.history import describe, history, redo, undo
from curator.curation.tag_edits import (
    add_tags,
    add_to,
    canonical_names,
    remove_from,
    remove_tags,
    rename_rows,
    rename_tag,
    replace_tags,
)

__all__ = [
    "CHUNK",
    "IMAGE_COLUMNS",
    "Author",
    "ChangeSet",
    "EditResult",
    "TagRowData",
    "add_tags",
    "add_to",
    "canonical_names",
    "chunks",
    "describe",
    "history",
    "redo",
    "set_caption",
    "remove_from",
    "remove_tags",
    "rename_rows",
    "rename_tag",
    "replace_tags",
    "selected_ids",
    "tag_rows",
    "undo",
]
