"""Datasets, normalisation, sky masks and batched augmentations (the layer between io and models)."""
