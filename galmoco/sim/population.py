"""The simulated population: what is in each stamp, drawn as pure functions of a numpy ``Generator``.

Every number the renderer needs (and the truth catalogue records) is drawn here, so one object's
parameters depend only on its own random stream and never on how the survey is split among workers.

Morphology follows the usual two-component picture (de Vaucouleurs bulge + exponential disk, e.g.
Simard et al. 2011, ApJS 196, 11) with star-forming clumps in disks (GalSim ``RandomKnots``).
Magnitudes follow a power-law number count ``dlogN/dm = counts_slope`` (about 0.35 in i for
17.5 < i < 22, e.g. Yasuda et al. 2001, AJ 122, 1104); sizes shrink with magnitude with a
lognormal scatter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammainc

from galmoco.surveys import BAND_ORDER, DES_ZEROPOINT

__all__ = [
    "CLASSES",
    "POPULATIONS",
    "PopulationConfig",
    "Component",
    "ObjectParams",
    "draw_object",
    "draw_psf",
    "power_law_magnitude",
    "combined_half_light_radius",
]

#: class label -> class_id (the id is the position in this tuple)
CLASSES: tuple[str, ...] = ("elliptical", "lenticular", "spiral", "irregular", "star", "empty")

#: colour of each component relative to i band (mag_band - mag_i), before per-object scatter
_COLOURS = {
    "bulge": {"g": 1.65, "r": 0.45, "i": 0.0, "z": -0.25, "y": -0.35},  # red, old stars
    "disk": {"g": 0.75, "r": 0.22, "i": 0.0, "z": -0.12, "y": -0.16},
    "knots": {"g": 0.15, "r": 0.02, "i": 0.0, "z": 0.05, "y": 0.05},  # blue star-forming clumps
}
_ALL_BANDS = BAND_ORDER


@dataclass(frozen=True)
class PopulationConfig:
    """Fractions and distributions of the simulated population (defaults: a DES-like galaxy sample).

    The class fractions must sum to 1. ``neighbour_fraction`` and ``star_neighbour_fraction`` apply to
    stamps whose central object is a galaxy; ``faint_fraction`` of the galaxies are drawn in
    ``faint_mag_range`` instead of ``mag_range``.
    """

    class_fractions: dict[str, float] = field(
        default_factory=lambda: {
            "elliptical": 0.20,
            "lenticular": 0.17,
            "spiral": 0.40,
            "irregular": 0.15,
            "star": 0.05,
            "empty": 0.03,
        }
    )
    mag_range: tuple[float, float] = (17.5, 22.0)  # i band, AB
    faint_mag_range: tuple[float, float] = (22.0, 23.5)
    faint_fraction: float = 0.05
    counts_slope: float = 0.35  # dlog10 N / dm
    hlr_at_mag19: float = 1.0  # disk half-light radius (arcsec) at i = 19
    hlr_mag_slope: float = -0.12  # dlog10(hlr) / dm
    hlr_scatter_dex: float = 0.15
    neighbour_fraction: float = 0.25
    star_neighbour_fraction: float = 0.08
    star_mag_range: tuple[float, float] = (16.0, 22.0)
    colour_scatter: float = 0.08  # mag, per colour
    #: when set, each galaxy's combined half-light radius (arcsec) is log-uniform in this range instead
    #: of following its magnitude (bulge and disk scaled together, their ratio kept)
    hlr_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.class_fractions) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown classes {sorted(unknown)}; known: {CLASSES}")
        if not np.isclose(sum(self.class_fractions.values()), 1.0):
            raise ValueError(f"class fractions sum to {sum(self.class_fractions.values())}, not 1")
        if self.hlr_range is not None and not 0 < self.hlr_range[0] <= self.hlr_range[1]:
            raise ValueError(f"hlr_range must be 0 < low <= high (arcsec), got {self.hlr_range}")


@dataclass(frozen=True)
class Component:
    """One light profile: position offset from the stamp centre (arcsec) and per-band flux (counts).

    ``kind`` is ``"bulge"`` (de Vaucouleurs), ``"disk"`` (exponential), ``"knots"`` (RandomKnots
    following the disk) or ``"point"`` (a star); ``q`` is the axis ratio, ``pa_deg`` the position
    angle of the major axis from the +x axis.
    """

    kind: str
    flux: dict[str, float]
    hlr: float = 0.0
    q: float = 1.0
    pa_deg: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    n_knots: int = 0


@dataclass(frozen=True)
class ObjectParams:
    """Everything in one stamp: its components, PSF and sky, and the truth summarising them."""

    components: tuple[Component, ...]
    psf_fwhm: dict[str, float]  # arcsec
    psf_g1: float
    psf_g2: float
    truth: dict[str, object]


def power_law_magnitude(rng: np.random.Generator, lo: float, hi: float, slope: float) -> float:
    """Draw a magnitude from ``N(<m) ∝ 10**(slope*m)`` between ``lo`` and ``hi`` (inverse CDF)."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return float(np.log10(a + rng.uniform() * (b - a)) / slope)


def combined_half_light_radius(bulge_frac: float, bulge_hlr: float, disk_hlr: float) -> float:
    """Half-light radius (same units as the inputs) of a circular de Vaucouleurs + exponential sum.

    Solves ``bf*Lb(<r) + (1-bf)*Ld(<r) = 1/2`` with the Sersic enclosed-light fraction
    ``gammainc(2n, b_n (r/re)**(1/n))`` (Graham & Driver 2005), by bisection.
    """

    def enclosed(r: float) -> float:
        dev = gammainc(8.0, 7.669249 * (r / bulge_hlr) ** 0.25) if bulge_frac > 0 else 0.0
        exp = gammainc(2.0, 1.678347 * r / disk_hlr) if bulge_frac < 1 else 0.0
        return bulge_frac * dev + (1 - bulge_frac) * exp

    lo, hi = 0.0, 10 * max(bulge_hlr, disk_hlr)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if enclosed(mid) < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def _fluxes(rng: np.random.Generator, mag_i: float, kind: str, shift: float, scatter: float) -> dict:
    """Per-band fluxes (counts at zero point 30) of a component of i magnitude ``mag_i``."""
    out = {}
    for band in _ALL_BANDS:
        colour = _COLOURS[kind][band]
        if band != "i":
            # redder overall for a larger `shift` (a crude redshift), more so at bluer bands
            colour += shift * (1.0 if band in "gr" else -0.5) + rng.normal(0, scatter)
        out[band] = float(10 ** (-0.4 * (mag_i + colour - DES_ZEROPOINT)))
    return out


def _star_fluxes(rng: np.random.Generator, mag_i: float) -> dict:
    """Stellar locus colours (approximate main sequence: g-r in 0.2..1.4)."""
    gr = rng.uniform(0.2, 1.4)
    ri = 0.05 + 0.55 * max(gr - 0.3, 0.0) ** 1.5
    iz = 0.3 * ri
    mags = {"g": mag_i + gr + ri, "r": mag_i + ri, "i": mag_i, "z": mag_i - iz, "y": mag_i - 1.3 * iz}
    return {b: float(10 ** (-0.4 * (m - DES_ZEROPOINT))) for b, m in mags.items()}


def _galaxy(rng: np.random.Generator, cfg: PopulationConfig, cls: str, mag_i: float, dx: float, dy: float):
    """The components of one galaxy of class ``cls`` and its truth summary."""
    disk_hlr = cfg.hlr_at_mag19 * 10 ** (
        cfg.hlr_mag_slope * (mag_i - 19.0) + rng.normal(0, cfg.hlr_scatter_dex)
    )
    disk_hlr = float(np.clip(disk_hlr, 0.2, 4.0))
    bulge_frac, knot_frac, n_knots = {
        "elliptical": (rng.uniform(0.85, 1.0), 0.0, 0),
        "lenticular": (rng.uniform(0.4, 0.8), 0.0, 0),
        "spiral": (rng.uniform(0.05, 0.4), rng.uniform(0.15, 0.4), int(rng.integers(8, 25))),
        "irregular": (0.0, rng.uniform(0.3, 0.6), int(rng.integers(15, 40))),
    }[cls]
    bulge_frac = float(bulge_frac)
    # ellipticals: compact, the "disk" is a faint envelope; composites: bulge smaller than the disk
    bulge_hlr = disk_hlr * (0.7 if cls == "elliptical" else rng.uniform(0.25, 0.5))
    if cfg.hlr_range is not None:  # an extra draw only here: the default population's streams are unchanged
        lo, hi = np.log(cfg.hlr_range[0]), np.log(cfg.hlr_range[1])
        target = float(np.exp(rng.uniform(lo, hi)))
        scale = target / combined_half_light_radius(bulge_frac, bulge_hlr, disk_hlr)
        disk_hlr, bulge_hlr = disk_hlr * scale, bulge_hlr * scale
    # disk axis ratio from a random inclination of a disk of intrinsic thickness 0.2
    cos_i = rng.uniform()
    q_disk = float(np.sqrt(cos_i**2 * (1 - 0.2**2) + 0.2**2))
    q_bulge = float(rng.uniform(0.5, 1.0)) if cls == "elliptical" else float(np.sqrt(q_disk))
    pa = float(rng.uniform(0, 180))
    shift = rng.normal(0, 0.15)
    comps = []
    if bulge_frac > 0:
        mag_b = mag_i - 2.5 * np.log10(bulge_frac)
        comps.append(
            Component(
                "bulge",
                _fluxes(rng, mag_b, "bulge", shift, cfg.colour_scatter),
                bulge_hlr,
                q_bulge,
                pa,
                dx,
                dy,
            )
        )
    disk_share = (1 - bulge_frac) * (1 - knot_frac)
    if disk_share > 0:
        mag_d = mag_i - 2.5 * np.log10(disk_share)
        comps.append(
            Component(
                "disk", _fluxes(rng, mag_d, "disk", shift, cfg.colour_scatter), disk_hlr, q_disk, pa, dx, dy
            )
        )
    if knot_frac > 0:
        mag_k = mag_i - 2.5 * np.log10((1 - bulge_frac) * knot_frac)
        comps.append(
            Component(
                "knots",
                _fluxes(rng, mag_k, "knots", shift, cfg.colour_scatter),
                disk_hlr,
                q_disk,
                pa,
                dx,
                dy,
                n_knots,
            )
        )
    dominant_q = q_bulge if bulge_frac >= 0.5 else q_disk
    g = (1 - dominant_q) / (1 + dominant_q)
    truth = {
        "mag": {b: float(30 - 2.5 * np.log10(sum(c.flux[b] for c in comps))) for b in _ALL_BANDS},
        "hlr_arcsec": combined_half_light_radius(bulge_frac, bulge_hlr, disk_hlr),
        "bulge_frac": bulge_frac,
        "sersic_n": 4.0 if bulge_frac >= 0.5 else 1.0,
        "ellipticity": float(g),
        "e1": float(g * np.cos(2 * np.radians(pa))),
        "e2": float(g * np.sin(2 * np.radians(pa))),
        "pa_deg": pa,
        "n_clumps": n_knots,
    }
    return comps, truth


def _pick_class(rng: np.random.Generator, fractions: dict[str, float]) -> str:
    names = list(fractions)
    return names[int(rng.choice(len(names), p=np.array([fractions[n] for n in names])))]


def _ring_radius(rng: np.random.Generator, inner: float, outer: float) -> float:
    """A neighbour's distance from the centre (arcsec), uniform in ``[inner, outer)``.

    On a stamp too small for that ring (about 32 pixels or less at DES scale) the neighbour goes to the
    outer half of the stamp instead, ``[outer / 2, outer)``; one draw either way, so larger stamps keep
    exactly the same objects.
    """
    return float(rng.uniform(inner if inner < outer else 0.5 * outer, outer))


def draw_psf(
    rng: np.random.Generator, psf_median: dict[str, float], psf_scatter: float
) -> tuple[dict[str, float], float, float]:
    """One observation's PSF: FWHM per band (arcsec) from the survey's seeing distribution, and its shear.

    Args:
        rng: the generator to draw from.
        psf_median: median PSF FWHM per band (arcsec).
        psf_scatter: lognormal FWHM scatter, mostly common to all bands (the seeing) with a small
            per-band part (30% of it).

    Returns:
        ``(psf_fwhm, psf_g1, psf_g2)``.
    """
    common = rng.normal(0, psf_scatter)
    psf_fwhm = {
        b: float(psf_median[b] * np.exp(common + rng.normal(0, 0.3 * psf_scatter))) for b in psf_median
    }
    psf_g1, psf_g2 = (float(v) for v in rng.normal(0, 0.01, size=2))
    return psf_fwhm, psf_g1, psf_g2


def draw_object(
    rng: np.random.Generator,
    cfg: PopulationConfig,
    psf_median: dict[str, float],
    psf_scatter: float,
    stamp_arcsec: float,
) -> ObjectParams:
    """Draw one stamp's contents.

    Args:
        rng: the object's own generator (from ``SeedSequence([seed, index])``).
        cfg: population fractions and distributions.
        psf_median: median PSF FWHM per band (arcsec).
        psf_scatter: lognormal object-to-object FWHM scatter (0.1 = 10%), mostly common to all bands
            (the seeing) with a small per-band part.
        stamp_arcsec: stamp side (arcsec); neighbours are placed inside it.

    Returns:
        The components (central object first) and truth fields.
    """
    psf_fwhm, psf_g1, psf_g2 = draw_psf(rng, psf_median, psf_scatter)
    cls = _pick_class(rng, cfg.class_fractions)
    # the catalogue position is the light centroid: a sub-pixel offset is applied by the renderer
    comps: list[Component] = []
    truth: dict[str, object] = {
        "class": cls,
        "class_id": CLASSES.index(cls),
        "hlr_arcsec": 0.0,
        "bulge_frac": 0.0,
        "sersic_n": 0.0,
        "ellipticity": 0.0,
        "e1": 0.0,
        "e2": 0.0,
        "pa_deg": 0.0,
        "n_clumps": 0,
        "mag": {b: np.nan for b in _ALL_BANDS},
        "has_neighbour": False,
        "has_star": False,
    }
    if cls == "star":
        mag_i = rng.uniform(*cfg.star_mag_range)
        fl = _star_fluxes(rng, mag_i)
        comps.append(Component("point", fl))
        truth["mag"] = {b: float(30 - 2.5 * np.log10(f)) for b, f in fl.items()}
    elif cls != "empty":
        faint = rng.uniform() < cfg.faint_fraction
        mag_i = power_law_magnitude(rng, *(cfg.faint_mag_range if faint else cfg.mag_range), cfg.counts_slope)
        gal, gtruth = _galaxy(rng, cfg, cls, mag_i, 0.0, 0.0)
        comps += gal
        truth.update(gtruth)
    if cls not in ("star", "empty"):
        half = 0.5 * stamp_arcsec
        if rng.uniform() < cfg.neighbour_fraction:
            r, phi = _ring_radius(rng, 3.0, 0.9 * half), rng.uniform(0, 2 * np.pi)
            ncls = _pick_class(rng, {"elliptical": 0.3, "spiral": 0.5, "irregular": 0.2})
            nmag = power_law_magnitude(rng, 18.0, 23.0, cfg.counts_slope)
            comps += _galaxy(rng, cfg, ncls, nmag, r * np.cos(phi), r * np.sin(phi))[0]
            truth["has_neighbour"] = True
        if rng.uniform() < cfg.star_neighbour_fraction:
            r, phi = _ring_radius(rng, 4.0, 0.95 * half), rng.uniform(0, 2 * np.pi)
            fl = _star_fluxes(rng, rng.uniform(*cfg.star_mag_range))
            comps.append(Component("point", fl, dx=r * np.cos(phi), dy=r * np.sin(phi)))
            truth["has_star"] = True
    return ObjectParams(tuple(comps), psf_fwhm, psf_g1, psf_g2, truth)


#: named populations for ``galmoco simulate --population``: ``default`` (a DES-like galaxy sample, mostly
#: faint and small) and ``bright`` (a second population to check that a training recipe carries over:
#: galaxies only, i = 16.5-19.5, half-light radius 0.5-2 arcsec, i.e. large and resolved)
POPULATIONS: dict[str, PopulationConfig] = {
    "default": PopulationConfig(),
    "bright": PopulationConfig(
        class_fractions={"elliptical": 0.25, "lenticular": 0.2, "spiral": 0.4, "irregular": 0.15},
        mag_range=(16.5, 19.5),
        faint_fraction=0.0,
        hlr_range=(0.5, 2.0),
    ),
}
