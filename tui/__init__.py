"""The Textual review app."""
