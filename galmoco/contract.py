"""The data contract: what a model was trained on, so that it is never fed other data silently.

A network trained on ``griz`` stamps of 64x64 DES pixels in counts at zero point 30 gives meaningless
vectors for ``rigz`` stamps, 48x48 stamps (the adaptive pool accepts any size), nanomaggies or another
pixel scale: nothing fails, the science is wrong. The contract is recorded in every checkpoint
(:mod:`galmoco.train.checkpoint`) and checked against the data on embed, resume, report and every
:mod:`galmoco.api` call, with a one-line error naming both values.

A store's contract comes from its attributes (``bands``, ``units``, ``zeropoint``, ``pixel_scale``) and
its stamp shape; a model's adds the flux normalisation and the per-band sky sigma it divides by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from galmoco.errors import GalmocoError

__all__ = ["DataContract"]

#: pixel scales that differ by less than this fraction are the same survey pixel
PIXEL_SCALE_RTOL = 0.01
#: zero points (magnitudes) that differ by less than this are the same
ZEROPOINT_ATOL = 1e-3


def _size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class DataContract:
    """Bands in order, stamp size, pixel scale, flux units and zero point, and the normalisation.

    ``None`` marks a value that is not known (a checkpoint written before contracts existed, or data
    that does not say); unknown values are not checked.

    Attributes:
        bands: band names in channel order, e.g. ``"griz"``.
        stamp_size: ``(H, W)`` in pixels.
        pixel_scale: arcsec per pixel.
        zeropoint: magnitude zero point of the flux (``mag = zeropoint - 2.5 log10(flux)``).
        units: flux units, ``"counts"`` (DES) or ``"nanomaggies"`` (Legacy Survey).
        normalize: the normalisation's settings (``method``, ``softening_sigmas``, ``log10_floor``).
        sky_sigma: per-band sky noise in ``units`` that the normalisation divides by.

    Example:
        >>> model = DataContract("griz", (64, 64), 0.263, 30.0, "counts")
        >>> model.check(DataContract("rigz", (64, 64), 0.263, 30.0, "counts"), "a.h5", "b.pt")
        Traceback (most recent call last):
        ...
        galmoco.errors.GalmocoError: a.h5: bands 'rigz' (4, in this order) but b.pt was trained on 'griz' (4)
    """

    bands: str
    stamp_size: tuple[int, int]
    pixel_scale: float | None = None
    zeropoint: float | None = None
    units: str | None = None
    normalize: Mapping[str, Any] | None = None
    sky_sigma: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", "".join(self.bands))
        object.__setattr__(self, "stamp_size", _size(self.stamp_size))
        if self.sky_sigma is not None:
            object.__setattr__(self, "sky_sigma", tuple(float(s) for s in self.sky_sigma))
        if self.normalize is not None:
            object.__setattr__(self, "normalize", dict(self.normalize))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], shape: tuple[int, ...]) -> DataContract:
        """The contract of a packed store from its HDF5 attributes and its ``(B, H, W)`` stamp shape."""
        def number(key: str) -> float | None:
            value = attrs.get(key)
            return None if value is None else float(value)
        units = attrs.get("units")
        return cls(bands=str(attrs["bands"]), stamp_size=(int(shape[-2]), int(shape[-1])),
                   pixel_scale=number("pixel_scale"), zeropoint=number("zeropoint"),
                   units=None if units is None else str(units))

    def trained_with(self, normalize: Mapping[str, Any], sky_sigma: tuple[float, ...]) -> DataContract:
        """This data contract plus the normalisation a model applied to it."""
        return replace(self, normalize=dict(normalize), sky_sigma=tuple(sky_sigma))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples): safe for ``torch.load(weights_only=True)`` and JSON."""
        out = asdict(self)
        out["stamp_size"] = list(self.stamp_size)
        out["sky_sigma"] = None if self.sky_sigma is None else list(self.sky_sigma)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataContract:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data.get(k) for k in ("bands", "stamp_size", "pixel_scale", "zeropoint", "units",
                                                "normalize", "sky_sigma")})

    def check(self, data: DataContract, data_name: str, model_name: str = "the model",
              allow_size: bool = False) -> None:
        """Raise unless ``data`` is what this (the model's) contract was trained on.

        Args:
            data: the contract of the data to be fed to the model (a store, FITS files, an array).
            data_name: names the data in the message (a file name).
            model_name: names the model in the message (a checkpoint).
            allow_size: accept another stamp size (the encoder pools adaptively; meant for deliberate
                use, e.g. larger stamps of the same survey).

        Raises:
            GalmocoError: one line naming ``data_name``, both values and ``model_name``.
        """
        problem = self.mismatch(data, allow_size)
        if problem:
            raise GalmocoError(f"{data_name}: {problem.format(model=model_name)}")

    def mismatch(self, data: DataContract, allow_size: bool = False) -> str | None:
        """The first difference as a sentence with a ``{model}`` placeholder, or None when compatible."""
        if data.bands != self.bands:
            return (f"bands {data.bands!r} ({len(data.bands)}, in this order) but {{model}} was trained on "
                    f"{self.bands!r} ({len(self.bands)})")
        if data.stamp_size != self.stamp_size and not allow_size:
            got, want = "x".join(map(str, data.stamp_size)), "x".join(map(str, self.stamp_size))
            larger = all(g >= w for g, w in zip(data.stamp_size, self.stamp_size, strict=True))
            crop = (f"centre-crop them to {want} (`galmoco pack --size {self.stamp_size[0]}`) or "
                    if larger else "")
            return (f"stamps are {got} pixels but {{model}} was trained on {want}; {crop}allow another "
                    "size explicitly (--allow-size, allow_size=True) if that is meant")
        if None not in (data.units, self.units) and data.units != self.units:
            return f"flux units {data.units!r} but {{model}} was trained on {self.units!r}"
        if None not in (data.zeropoint, self.zeropoint) and not math.isclose(
                data.zeropoint, self.zeropoint, abs_tol=ZEROPOINT_ATOL):
            return f"zero point {data.zeropoint:g} mag but {{model}} was trained on {self.zeropoint:g}"
        if None not in (data.pixel_scale, self.pixel_scale) and not math.isclose(
                data.pixel_scale, self.pixel_scale, rel_tol=PIXEL_SCALE_RTOL):
            return (f"pixel scale {data.pixel_scale:.4f} arcsec but {{model}} was trained on "
                    f"{self.pixel_scale:.4f}")
        return None
