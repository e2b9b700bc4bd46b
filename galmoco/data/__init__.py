"""Datasets, normalisation, sky masks and batched augmentations (the layer between io and models).

- :mod:`galmoco.data.normalize`: raw flux to network input (asinh or log10) and per-band sky noise;
- :mod:`galmoco.data.masks`: sky masks and the per-pixel weights of the masked reconstruction loss;
- :mod:`galmoco.data.augment`: batched augmentations for astronomy on tensors;
- :mod:`galmoco.data.transforms`: the 8 symmetries of the square.

See ``docs/data.md``.
"""
