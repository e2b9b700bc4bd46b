"""The simulator delivers what it claims: PSF size, sky noise, weights, magnitudes, GalSim agreement."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from scipy.optimize import least_squares

from galmoco.sim import ObservingConfig, SimSpec, simulate_object
from galmoco.sim.population import Component, ObjectParams
from galmoco.sim.render import render_stamp

from .conftest import only

RA, DEC = 30.0, -30.0  # deep inside tile DES0200-3004's row, away from edges: untrimmed


def _moffat_pixelated(shape, x0, y0, fwhm_px, flux, beta=3.0, sub=5):
    """A Moffat image integrated over pixels by sub-sampling: independent of the simulator's FFT code."""
    alpha = fwhm_px / (2 * np.sqrt(2 ** (1 / beta) - 1))
    off = (np.arange(sub) + 0.5) / sub - 0.5
    y = np.arange(shape[0])[:, None, None, None] + off[None, None, :, None]
    x = np.arange(shape[1])[None, :, None, None] + off[None, None, None, :]
    prof = (beta - 1) / (np.pi * alpha**2) * (1 + ((x - x0) ** 2 + (y - y0) ** 2) / alpha**2) ** -beta
    return flux * prof.mean(axis=(2, 3))


def _fit_fwhm(img: np.ndarray, sigma: float) -> float:
    c = 12  # fit the central 25x25 pixels
    cy, cx = np.unravel_index(np.argmax(img), img.shape)
    cut = img[cy - c : cy + c + 1, cx - c : cx + c + 1]

    def resid(p):
        return ((_moffat_pixelated(cut.shape, *p) - cut) / sigma).ravel()

    fit = least_squares(resid, x0=[c, c, 3.5, cut.sum()])
    return float(fit.x[2])


def test_psf_fwhm_measured_on_isolated_stars():
    spec = SimSpec(
        seed=1,
        population=only("star", star_mag_range=(17.0, 17.5), neighbour_fraction=0, star_neighbour_fraction=0),
        observing=ObservingConfig(saturation_counts=np.inf),
    )
    ratios = {b: [] for b in spec.bands}
    for k in range(6):
        obj = simulate_object(k, RA, DEC + 0.001 * k, spec)
        for b, band in enumerate(spec.bands):
            fwhm = _fit_fwhm(obj.image[b], obj.truth[f"sky_sigma_{band}"]) * 0.263
            ratios[band].append(fwhm / obj.truth[f"psf_fwhm_{band}"])
    for band, r in ratios.items():
        assert abs(np.median(r) - 1) < 0.05, (band, r)
    # the requested FWHMs scatter around the DR2 medians
    assert 0.8 < obj.truth["psf_fwhm_i"] / 0.88 < 1.25


def test_sky_noise_and_weight_on_empty_stamps():
    spec = SimSpec(seed=2, population=only("empty"))
    for k in range(5):
        obj = simulate_object(k, RA, DEC + 0.001 * k, spec)
        for b, band in enumerate(spec.bands):
            sigma = obj.truth[f"sky_sigma_{band}"]
            assert abs(obj.image[b].std() / sigma - 1) < 0.05
            assert abs(obj.image[b].mean()) < 4 * sigma / 64
            assert np.allclose(obj.weight[b], sigma**-2)
            assert not obj.mask.any()
    # sky levels follow the DR2 depths (g 2.0, z 8.8 counts) within the depth scatter
    assert 1.5 < obj.truth["sky_sigma_g"] < 2.7 and 6.6 < obj.truth["sky_sigma_z"] < 11.7


def test_aperture_magnitudes_of_isolated_bright_galaxies():
    pop = only(
        "spiral", mag_range=(17.5, 18.5), faint_fraction=0, neighbour_fraction=0, star_neighbour_fraction=0
    )
    pop_e = only(
        "elliptical",
        mag_range=(17.5, 18.5),
        faint_fraction=0,
        neighbour_fraction=0,
        star_neighbour_fraction=0,
    )
    yy, xx = np.mgrid[:64, :64]
    checked = 0
    for pop_k in (pop, pop_e):
        spec = SimSpec(seed=4, population=pop_k)
        for k in range(6):
            obj = simulate_object(k, RA, DEC + 0.001 * k, spec)
            if obj.truth["hlr_arcsec"] > 1.2:  # the 64-pixel stamp holds too little of a big deV
                continue
            ap = np.hypot(xx - obj.x_cut, yy - obj.y_cut) < 30
            for b, band in enumerate(spec.bands):
                mag = 30 - 2.5 * np.log10(obj.image[b][ap].sum())
                assert abs(mag - obj.truth[f"mag_{band}"]) < 0.1, (band, mag, obj.truth[f"mag_{band}"])
            checked += 1
    assert checked >= 6


def test_renderer_matches_galsim_drawimage():
    flux = {b: 1e4 for b in "griz"}
    comps = (
        Component("bulge", flux, 0.8, 0.6, 30.0),
        Component("disk", {b: 2e4 for b in "griz"}, 1.5, 0.4, 30.0, 1.0, -0.5),
        Component("point", {b: 5e3 for b in "griz"}, dx=4.0, dy=3.0),
    )
    params = ObjectParams(comps, {b: 0.9 for b in "griz"}, 0.02, -0.01, {})
    obs = ObservingConfig()
    img, _, _ = render_stamp(
        params, ("i",), 64, (0.3, -0.2), {"i": 1.0}, obs, np.random.default_rng(0), 1, noise=False
    )
    gsp = galsim.GSParams(folding_threshold=1e-3)
    scene = galsim.Add(
        [
            galsim.DeVaucouleurs(half_light_radius=0.8, flux=1e4, gsparams=gsp).shear(
                q=0.6, beta=30 * galsim.degrees
            ),
            galsim.Exponential(half_light_radius=1.5, flux=2e4, gsparams=gsp)
            .shear(q=0.4, beta=30 * galsim.degrees)
            .shift(1.0, -0.5),
            galsim.DeltaFunction(flux=5e3).shift(4.0, 3.0),
        ]
    )
    psf = galsim.Moffat(beta=3, fwhm=0.9, gsparams=gsp).shear(g1=0.02, g2=-0.01)
    ref = galsim.Convolve(scene, psf).drawImage(nx=64, ny=64, scale=0.263, offset=(0.3, -0.2)).array
    assert np.abs(img[0] - ref).max() < 1e-3 * ref.max()


@pytest.mark.parametrize("cls", ["spiral", "irregular"])
def test_clumpy_disks_have_knots_and_bluer_light(cls):
    spec = SimSpec(seed=5, population=only(cls, neighbour_fraction=0, star_neighbour_fraction=0))
    obj = simulate_object(0, RA, DEC, spec)
    assert obj.truth["n_clumps"] >= 5 and obj.truth["class"] == cls
