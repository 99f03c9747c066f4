"""Curation: tag edits with history and undo, review state, dedup, quality signals."""
