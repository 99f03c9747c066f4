"""Runs: every model that reads pixels goes through one loop (catalog → model → catalog)."""

from curator.runs.loop import RunOptions, RunSummary, run_models

__all__ = ["RunOptions", "RunSummary", "run_models"]
