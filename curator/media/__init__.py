"""Pixels: converting any image mode for models and exports, and writing images safely."""
