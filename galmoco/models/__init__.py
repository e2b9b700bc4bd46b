"""Networks: encoders, the decoder, projection heads, MoCo's parts, and :class:`GalaxyModel`."""

from galmoco.models.galaxy import GalaxyModel

__all__ = ["GalaxyModel"]
