"""Read-only views of the catalog that every face shares: image details, stats, listings."""
