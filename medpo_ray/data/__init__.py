"""Datasets: the embedded generator, loaders for real layouts, validation."""
