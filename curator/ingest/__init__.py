"""Ingest: walk folders, probe image files, read sidecars and infotext into the catalog."""
