"""Plain-language image descriptions for people using screen readers."""

from curator.describe.catalog import Described, describe_images, facts_for
from curator.describe.compose import Facts, describe
from curator.describe.metadata import write_description

__all__ = ["Described", "Facts", "describe", "describe_images", "facts_for", "write_description"]
