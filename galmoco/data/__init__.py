"""Datasets, normalisation, sky masks and batched augmentations (the layer between io and models).

- :mod:`galmoco.data.normalize`: raw flux to network input (asinh or log10) and per-band sky noise;
- :mod:`galmoco.data.masks`: sky masks and the per-pixel weights of the masked reconstruction loss;
- :mod:`galmoco.data.augment`: batched augmentations for astronomy on tensors;
- :mod:`galmoco.data.psf`: a change of seeing (wider or sharper) in Fourier space;
- :mod:`galmoco.data.transforms`: the 8 symmetries of the square.

See ``docs/data.md``.
"""

from galmoco.data.augment import AugmentConfig, GalaxyAugment
from galmoco.data.masks import MaskConfig, ensure_sky_masks, pixel_weights
from galmoco.data.normalize import NormalizeConfig, Normalizer, estimate_store_sky_sigma
from galmoco.data.transforms import SYMMETRIES, TRANSFORMS, apply_symmetry

__all__ = ["SYMMETRIES", "TRANSFORMS", "AugmentConfig", "GalaxyAugment", "MaskConfig", "NormalizeConfig",
           "Normalizer", "apply_symmetry", "ensure_sky_masks", "estimate_store_sky_sigma", "pixel_weights"]
