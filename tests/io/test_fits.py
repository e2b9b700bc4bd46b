"""galmoco.io.fits on real FITS files in every layout, and every bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits as afits

from galmoco.errors import GalmocoError
from galmoco.io.fits import cutout_id, find_cutouts, read_cutout, sky_sigma

BASENAME = "DESJ012621.1512+032909.9960"


def test_des_folder_values_bands_and_facts(tmp_path, writers):
    obj = writers.des_object(tmp_path, BASENAME, bands="zgri")  # written out of order on purpose
    cut = read_cutout(obj["folder"])
    assert cut.bands == ("g", "r", "i", "z")  # default: all found, grizy order
    order = [obj["bands"].index(b) for b in "griz"]
    assert np.array_equal(cut.image, obj["image"][order])
    assert np.array_equal(cut.weight, obj["weight"][order])
    assert cut.image.dtype == np.float32 and cut.image.dtype.isnative and cut.image.shape == (4, 16, 16)
    assert (cut.ra, cut.dec) == (obj["ra"], obj["dec"])
    assert cut.pixel_scale == pytest.approx(0.263)
    assert (cut.zeropoint, cut.units, cut.id) == (30.0, "counts", BASENAME)
    assert (cut.n_bad_pixels, cut.padded) == (0, False)


def test_band_order_as_asked(tmp_path, writers):
    obj = writers.des_object(tmp_path, BASENAME, bands="griz")
    cut = read_cutout(obj["folder"], bands="zg")
    assert cut.bands == ("z", "g")
    assert np.array_equal(cut.image, obj["image"][[3, 0]])


def test_single_des_file_and_coadd_id_posdir(tmp_path, writers):
    obj = writers.des_object(tmp_path, "1234567890", bands="r")  # an id row: POSDIR is the COADD_OBJECT_ID
    single = next(obj["folder"].iterdir())
    cut = read_cutout(single)
    assert cut.bands == ("r",) and np.array_equal(cut.image, obj["image"])
    assert cut.id == "1234567890" == read_cutout(obj["folder"]).id
    loose = tmp_path / "loose" / f"{BASENAME}_i.fits"
    writers.write_des_file(loose, obj["image"][0], obj["weight"][0])
    assert cutout_id(loose) == BASENAME and read_cutout(loose).bands == ("i",)


@pytest.mark.parametrize("bands", ["griz", "r"])
def test_legacy_cube(tmp_path, writers, bands):
    cube = writers.ls_cube(tmp_path / "obj7.fits", bands=bands, shape=(32, 32), sigma=0.01)
    cube[:, 0, :5] = 0.0  # the viewer's "no data" pixels
    with afits.open(tmp_path / "obj7.fits", mode="update") as hdul:
        hdul[0].data[..., 0, :5] = 0.0
    cut = read_cutout(tmp_path / "obj7.fits", bands=bands[::-1])
    assert cut.bands == tuple(bands[::-1]) and np.array_equal(cut.image, cube[::-1])
    assert (cut.id, cut.units, cut.zeropoint) == ("obj7", "nanomaggies", 22.5)
    assert (cut.ra, cut.dec) == pytest.approx((150.0, 2.0))
    assert cut.pixel_scale == pytest.approx(0.262)
    assert np.all(cut.weight[:, 0, :5] == 0)  # uncovered
    covered = cut.weight[:, 1:, :]
    assert np.allclose(covered, 1 / 0.01**2, rtol=0.3)  # inverse variance from the robust sky noise


def test_sky_sigma_is_robust_to_a_bright_source():
    plane = np.random.default_rng(1).normal(0, 2.0, (64, 64)).astype(np.float32)
    plane[28:36, 28:36] += 1000.0
    assert sky_sigma(plane) == pytest.approx(2.0, rel=0.1)
    assert np.isnan(sky_sigma(np.zeros((8, 8), np.float32)))


def test_fits_fz_cube_and_des_band(tmp_path, writers):
    cube = writers.ls_cube(tmp_path / "c.fits.fz", bands="gr", compress=True)
    cut = read_cutout(tmp_path / "c.fits.fz")
    assert cut.id == "c" and np.array_equal(cut.image, cube)
    obj = writers.des_object(tmp_path, BASENAME, bands="g", compress=True)
    des = read_cutout(obj["folder"])
    assert np.array_equal(des.image, obj["image"]) and np.array_equal(des.weight, obj["weight"])
    assert des.ra == obj["ra"]


def test_blank_in_scaled_integers_matches_astropy(tmp_path, writers):
    raw = np.arange(64, dtype=np.int16).reshape(8, 8)
    path = writers.scaled_int_des(tmp_path / "x_r.fits", raw, bscale=0.5, bzero=10.0, blank=5)
    expected = afits.getdata(path).astype(np.float32)
    assert np.isnan(expected[0, 5])
    cut = read_cutout(path)
    assert cut.n_bad_pixels == 1 and cut.image[0, 0, 5] == 0 and cut.weight[0, 0, 5] == 0
    good = np.isfinite(expected)
    assert np.array_equal(cut.image[0][good], expected[good])


def test_nan_inf_and_msk_pixels_get_weight_zero(tmp_path, writers):
    image = np.ones((8, 8), np.float32)
    weight = np.full((8, 8), 4.0, np.float32)
    image[1, 1], image[2, 2], weight[3, 3] = np.nan, np.inf, np.nan
    mask = np.zeros((8, 8), np.int16)
    mask[4, 4] = 2
    path = writers.write_des_file(tmp_path / "o" / "o_g.fits", image, weight, mask=mask)
    cut = read_cutout(path)
    assert cut.n_bad_pixels == 3
    for y, x in [(1, 1), (2, 2), (3, 3)]:
        assert cut.image[0, y, x] == 0 and cut.weight[0, y, x] == 0
    assert cut.weight[0, 4, 4] == 0 and cut.image[0, 4, 4] == 1  # masked, value kept
    assert (cut.weight[0] == 0).sum() == 4


def _trimmed(tmp_path, writers, header_shift, with_centre=True):
    """A 16x16 cutout trimmed to 16x11: 5 columns cut off on the left (tile edge)."""
    full = np.arange(256, dtype=np.float32).reshape(16, 16)
    header = writers.des_header(10.0, -5.0, (16, 16), crpix_shift=header_shift)
    header = [c for c in header if with_centre or not c["name"].endswith("_CUTOUT")]
    path = writers.write_des_file(tmp_path / "t" / "t_g.fits", full[:, 5:], np.ones((16, 11), np.float32),
                                  header=header)
    return full, path


def test_pad_restores_the_trimmed_side(tmp_path, writers):
    full, path = _trimmed(tmp_path, writers, header_shift=(-5.0, 0.0))
    with pytest.raises(GalmocoError, match=r"t_g\.fits: cutout is 16x11 pixels, smaller than the "
                       r"requested 16x16 \(trimmed at a tile edge\?\); use pad=True / --pad"):
        read_cutout(path, size=16)
    cut = read_cutout(path, size=16, pad=True)
    assert cut.padded and cut.image.shape == (1, 16, 16)
    assert np.array_equal(cut.image[0, :, 5:], full[:, 5:])  # data back where it was in the untrimmed cutout
    assert np.all(cut.weight[0, :, :5] == 0) and np.all(cut.weight[0, :, 5:] == 1)


def test_pad_without_centre_is_symmetric_and_crop_is_central(tmp_path, writers):
    full, path = _trimmed(tmp_path, writers, header_shift=(-5.0, 0.0), with_centre=False)
    cut = read_cutout(path, size=(16, 16), pad=True)
    assert np.all(cut.weight[0, :, :2] == 0) and np.all(cut.weight[0, :, 13:] == 0)  # 2 left, 3 right
    assert np.array_equal(cut.image[0, :, 2:13], full[:, 5:])
    crop = read_cutout(path, size=(10, 9))
    assert np.array_equal(crop.image[0], full[3:13, 6:15]) and not crop.padded


def test_find_cutouts_in_a_job_layout(tmp_path, writers):
    job = tmp_path / "job"
    for name in ("DESJ1", "DESJ2"):
        writers.des_object(job / "DES0226-1541", name, bands="gr")
    (job / "DES0226-1541" / "DESJ1" / "DESJ1_gri_lupton.png").write_bytes(b"\x89PNG")
    (job / "summary.json").write_text("{}")
    writers.ls_cube(job / "cubes" / "a.fits")
    assert find_cutouts(job) == [job / "DES0226-1541" / "DESJ1", job / "DES0226-1541" / "DESJ2",
                                 job / "cubes" / "a.fits"]


# --- bad input: each its own message naming the file -------------------------------------------------

def test_missing_band(tmp_path, writers):
    obj = writers.des_object(tmp_path, BASENAME, bands="gr")
    with pytest.raises(GalmocoError, match=rf"{re.escape(BASENAME)}: band\(s\) iz missing \(found gr\)"):
        read_cutout(obj["folder"], bands="griz")
    writers.ls_cube(tmp_path / "c.fits", bands="gr")
    with pytest.raises(GalmocoError, match=r"c\.fits: band\(s\) z missing \(found gr\)"):
        read_cutout(tmp_path / "c.fits", bands="gz")


def test_bands_of_different_shapes(tmp_path, writers):
    folder = tmp_path / "o"
    writers.write_des_file(folder / "o_g.fits", np.ones((8, 8), np.float32), np.ones((8, 8), np.float32))
    writers.write_des_file(folder / "o_r.fits", np.ones((8, 6), np.float32), np.ones((8, 6), np.float32))
    with pytest.raises(GalmocoError, match=r"o: bands have different shapes: g 8x8, r 8x6"):
        read_cutout(folder)


def test_truncated_and_non_fits_files(tmp_path, writers):
    obj = writers.des_object(tmp_path, "o", bands="g", shape=(64, 64))
    good = obj["folder"] / "o_g.fits"
    trunc = tmp_path / "trunc_g.fits"
    for n_bytes in (20000, 40320, 31680):  # mid-block; block-aligned mid-WGT; right after MSK
        trunc.write_bytes(good.read_bytes()[:n_bytes])
        with pytest.raises(GalmocoError, match=r"trunc_g\.fits: (truncated FITS file|has a MSK but no WGT)"):
            read_cutout(trunc)
    junk = tmp_path / "junk.fits"
    junk.write_text("this is not FITS\n" * 200)
    with pytest.raises(GalmocoError, match=r"junk\.fits: not a readable FITS file"):
        read_cutout(junk)
    with pytest.raises(GalmocoError, match=r"nothere\.fits: no such file"):
        read_cutout(tmp_path / "nothere.fits")


def test_fits_without_an_image(tmp_path):
    path = tmp_path / "table.fits"
    afits.HDUList([afits.PrimaryHDU(), afits.BinTableHDU.from_columns(
        [afits.Column("a", "E", array=np.arange(3.0))])]).writeto(path)
    with pytest.raises(GalmocoError, match=r"table\.fits: no image in any HDU"):
        read_cutout(path)


def test_unknown_band_and_cube_mismatch(tmp_path):
    afits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(tmp_path / "plain.fits")
    with pytest.raises(GalmocoError, match=r"plain\.fits: cannot tell the band"):
        read_cutout(tmp_path / "plain.fits")
    hdu = afits.PrimaryHDU(np.ones((3, 8, 8), np.float32))
    hdu.header["BANDS"] = "griz"
    hdu.writeto(tmp_path / "cube.fits")
    with pytest.raises(GalmocoError, match=r"cube\.fits: image shape \(3, 8, 8\) does not match BANDS="):
        read_cutout(tmp_path / "cube.fits")


def test_bad_folders_and_options(tmp_path, writers):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalmocoError, match=r"empty: no <name>_<band>\.fits files"):
        read_cutout(tmp_path / "empty")
    writers.des_object(tmp_path, "two", bands="g")
    img = np.ones((16, 16), np.float32)
    writers.write_des_file(tmp_path / "two" / "other_g.fits", img, img)
    with pytest.raises(GalmocoError, match=r"two: holds band files of 2 objects"):
        read_cutout(tmp_path / "two")
    with pytest.raises(GalmocoError, match=r"bands 'gx'"):
        read_cutout(tmp_path / "two", bands="gx")
    with pytest.raises(GalmocoError, match=r"size 0"):
        read_cutout(tmp_path / "two", size=0)
