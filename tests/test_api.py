"""galmoco.api: load(run).embed(FITS files) equals pack + embed; the contract is checked; the public
names are importable from galmoco; the docstring examples run."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import galmoco
import galmoco.api as api_module
from galmoco.config import ModelConfig, TrainConfig, config_to_dict
from galmoco.embed import embed_store, read_embeddings
from galmoco.errors import GalmocoError
from galmoco.io.pack import pack_cutouts
from galmoco.io.store import read_store_contract
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.checkpoint import save_checkpoint
from tests.io.conftest import des_object

SIZE = 16


def write_run(run, store, seed=0):
    """A run dir with an untrained seeded moco-ae model whose contract is ``store``'s."""
    config = TrainConfig(objective="moco-ae", model=ModelConfig(latent_dim=8, widths=(4, 8)))
    torch.manual_seed(seed)
    sky = [5.0, 5.0, 5.0, 5.0]
    model = GalaxyModel(config, tuple("griz"), SIZE, sky)
    contract = read_store_contract(store).trained_with(config_to_dict(config.normalize), tuple(sky))
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(config), "bands": "griz",
                     "image_size": SIZE, "sky_sigma": sky, "contract": contract.to_dict()},
                    run / "checkpoints" / "last.pt")
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three DESaccess cutout folders, their packed store, a run and an index of the store's embeddings."""
    root = tmp_path_factory.mktemp("api")
    fits_paths = [des_object(root / "cutouts", f"DESJ00{i}", seed=i, ra=10 + i / 100, dec=-1.0)["folder"]
                  for i in range(3)]
    # one trimmed at a tile edge: pack --pad and the API must pad it the same way
    trimmed = des_object(root / "cutouts", "DESJ009", seed=9, shape=(16, 13), ra=10.5, dec=-1)
    fits_paths.append(trimmed["folder"])
    store = pack_cutouts(fits_paths, root / "packed.h5", size=SIZE, pad=True, workers=1).path
    run = write_run(root / "run", store)
    embeddings = embed_store(run, store, root / "emb.parquet", device="cpu")
    index_dir = galmoco.build_index(embeddings, root / "index")
    return {"fits_paths": fits_paths, "store_path": store, "run_dir": run, "index_dir": index_dir,
            "embeddings": embeddings}


def test_embed_fits_equals_pack_then_embed(world):
    model = galmoco.load(world["run_dir"])
    table = model.embed(world["fits_paths"])
    packed = read_embeddings(world["embeddings"])
    order = {v: i for i, v in enumerate(packed["id"])}
    assert sorted(table["id"]) == sorted(packed["id"]) and len(table) == 4
    rows = [order[i] for i in table["id"]]
    np.testing.assert_allclose(table["latent"], np.asarray(packed["latent"])[rows], rtol=0, atol=1e-6)
    for column in ("ra", "dec", "n_bad_pixels", "padded"):
        np.testing.assert_array_equal(table[column], np.asarray(packed[column])[rows])
    assert table["padded"].sum() == 1
    # a store and an array give the same vectors
    np.testing.assert_allclose(model.embed(world["store_path"])["latent"], packed["latent"], atol=1e-6)
    with _images(world["store_path"]) as images:
        np.testing.assert_allclose(model.embed(images), packed["latent"], atol=1e-6)


class _images:
    def __init__(self, path):
        from galmoco.io.store import CutoutStore
        self.store = CutoutStore(path)

    def __enter__(self):
        return self.store.images[:]

    def __exit__(self, *exc):
        self.store.close()


def test_contract_is_checked_on_every_call(world, tmp_path):
    model = galmoco.load(world["run_dir"])
    with pytest.raises(GalmocoError, match=r"array \(1, 4, 20, 20\): stamps are 20x20 pixels but .* trained "
                                           r"on 16x16; centre-crop them to 16x16 \(`galmoco pack --size "
                                           r"16`\) or allow another size"):
        model.embed(np.zeros((1, 4, 20, 20)))
    assert model.embed(np.zeros((1, 4, 20, 20)), allow_size=True).shape == (1, 8)
    three = des_object(tmp_path, "DESJ3", bands="gri")["folder"]
    with pytest.raises(GalmocoError, match="DESJ3"):  # the file and the missing band are named
        model.embed([three])
    with pytest.raises(GalmocoError, match="no such checkpoint"):
        galmoco.load(tmp_path)


def test_reconstruct_is_in_flux_units(world):
    model = galmoco.load(world["run_dir"])
    with _images(world["store_path"]) as images:
        recon = model.reconstruct(images)
        net = model.network
        with torch.inference_mode():
            expected = net.normalizer.inverse(net.reconstruct(torch.from_numpy(images))).numpy()
    assert recon.shape == images.shape
    np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-4)


def test_public_names_are_eager_and_light():
    for name in galmoco.__all__:
        assert hasattr(galmoco, name), name
    assert "__getattr__" not in vars(galmoco)
    code = "import sys, galmoco; print('torch' in sys.modules, galmoco.load.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "galmoco.api"]
    assert Path(galmoco.__path__[0], "py.typed").is_file()


def test_docstring_examples_run(world):
    network = galmoco.load(world["run_dir"]).network
    result = doctest.testmod(api_module, extraglobs={**world, "network": network, "np": np},
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_search_by_fits_finds_the_packed_object_itself(world):
    table, images = galmoco.search(world["index_dir"], fits=[world["fits_paths"][1]], k=2, device="cpu")
    assert images.shape == (1, 4, SIZE, SIZE)
    assert list(table["id"])[0] == "DESJ001" and float(table["distance"][0]) < 1e-4
