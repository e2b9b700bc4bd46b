"""galmoco.embed: embedding a store equals calling the model directly, for every table format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galmoco.data.transforms import PLACEMENT_TRANSFORMS, apply_transform, galaxy_seeds, random_angles
from galmoco.embed import embed_store, encode_images, read_embeddings, stamp_snr
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore, read_catalog
from galmoco.io.tables import write_table


@pytest.mark.parametrize("suffix", [".parquet", ".fits", ".h5"])
def test_embed_equals_direct_model_call(tmp_path, store_path, model, suffix):
    out = embed_store(model, store_path, tmp_path / f"emb{suffix}", transforms=True, with_projection=True,
                      batch_size=20, device="cpu")  # 20 does not divide 48: a short last batch
    table = read_embeddings(out)
    with CutoutStore(store_path) as store:
        images = torch.from_numpy(store.images[:])
    seeds = galaxy_seeds(0, np.arange(48))  # per galaxy: the same whatever the batch size
    with torch.inference_mode():
        latent = model.encode(images).numpy()
        projection = model.project(model.encode(images)).numpy()
        flipped = {t: model.encode(apply_transform(images, t, seeds)) for t in PLACEMENT_TRANSFORMS}
        projected = {t: model.project(v).numpy() for t, v in flipped.items()}
    assert table["latent"].shape == (48, 8) and table["latent"].dtype == np.float32
    np.testing.assert_allclose(table["latent"], latent, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["projection"], projection, rtol=0, atol=1e-6)
    for t in PLACEMENT_TRANSFORMS:
        np.testing.assert_allclose(table[f"latent_{t}"], flipped[t].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(table[f"projection_{t}"], projected[t], rtol=0, atol=1e-5)
    np.testing.assert_allclose(table["angle_rotrand"], random_angles(seeds).numpy(), rtol=1e-6)
    np.testing.assert_allclose(table["stamp_snr"], stamp_snr(images).numpy(), rtol=1e-5)
    catalog = read_catalog(store_path)
    assert list(table["id"]) == list(catalog["id"]) and table["id"][0] == "obj000"
    np.testing.assert_array_equal(table["ra"], catalog["ra"])
    assert list(table["class"]) == list(catalog["class"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_encode_images_takes_the_device_by_name(store_path, model):
    with CutoutStore(store_path) as store:
        images = store.images[:6]
    by_name = encode_images(model, images, "cpu", transforms=["flip1"])
    by_device = encode_images(model, images, torch.device("cpu"), transforms=["flip1"])
    assert by_name.keys() == by_device.keys() >= {"latent", "latent_flip1", "stamp_snr"}
    np.testing.assert_array_equal(by_name["latent"], by_device["latent"])
    assert by_name["latent"].shape == (6, 8)


def test_embed_without_extras_has_only_latent(tmp_path, store_path, model):
    table = read_embeddings(embed_store(model, store_path, tmp_path / "e.parquet", device="cpu"))
    assert "latent" in table.colnames
    assert not [c for c in table.colnames if c.startswith("latent_") or c == "projection"]


def test_bad_inputs_name_the_problem(tmp_path, store_path, model):
    with pytest.raises(GalmocoError, match=r"e\.txt: \.txt cannot hold a table"):
        embed_store(model, store_path, tmp_path / "e.txt", device="cpu")
    with pytest.raises(GalmocoError, match=r"e\.csv: \.csv cannot hold a table with vector columns"):
        embed_store(model, store_path, tmp_path / "e.csv", device="cpu")
    with pytest.raises(GalmocoError, match="batch-size"):
        embed_store(model, store_path, tmp_path / "e.fits", batch_size=0, device="cpu")
    with pytest.raises(GalmocoError, match="checkpoint not found"):
        embed_store(tmp_path / "missing.pt", store_path, tmp_path / "e.fits", device="cpu")


def test_write_table_is_atomic_on_failure(tmp_path):
    from astropy.table import Table

    path = tmp_path / "t.fits"
    write_table(Table({"a": [1, 2]}), path)
    with pytest.raises(Exception):  # noqa: B017 - an object column cannot be written to FITS
        write_table(Table({"a": np.array([object(), object()])}), path)
    assert list(read_embeddings(path)["a"]) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.fits"]


@pytest.mark.parametrize("suffix", [".parquet", ".fits", ".h5"])
def test_write_table_takes_big_endian_columns(tmp_path, suffix):
    from astropy.table import Table

    table = Table({"x": np.array([1.5, -2.0], ">f8"), "v": np.arange(6, dtype=">f4").reshape(2, 3)})
    back = read_embeddings(write_table(table, tmp_path / f"t{suffix}"))
    assert list(back["x"]) == [1.5, -2.0] and back["v"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_angles_choose_the_rotation_columns(tmp_path, store_path, model):
    table = read_embeddings(embed_store(model, store_path, tmp_path / "e.parquet", transforms=True,
                                        angles=(22.5,), random_rotation=False, device="cpu"))
    turns = [c for c in table.colnames
             if c.startswith("latent_rot") and c not in ("latent_rot90", "latent_rot270")]
    assert turns == ["latent_rot22p5"] and "angle_rotrand" not in table.colnames


def test_stamp_snr_of_a_known_source():
    rng = np.random.default_rng(0)
    images = rng.normal(0.0, 2.0, (64, 2, 32, 32)).astype(np.float32)
    images[:, :, 12:20, 12:20] += 10.0  # 64 px of +10 per band inside the aperture (radius 8)
    snr = stamp_snr(torch.from_numpy(images)).numpy()
    n_ap = int(((np.arange(32)[:, None] - 15.5) ** 2 + (np.arange(32)[None] - 15.5) ** 2 <= 64).sum())
    expected = 2 * 64 * 10 / np.sqrt(n_ap * 2 * 2.0**2)
    assert abs(np.median(snr) - expected) < 0.1 * expected
