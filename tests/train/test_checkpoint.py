"""galmoco.train.checkpoint: the data contract is recorded and checked on resume and embed; old checkpoints
still load; an unreadable checkpoint is one line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from galmoco.contract import DataContract
from galmoco.embed import embed_store
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore, write_store
from galmoco.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from galmoco.train.loop import train
from tests.train.conftest import tiny_config


def _reordered(src, dst, order="rigz", size=None, **attrs):
    """A copy of store ``src`` with bands relabelled ``order`` (same pixels), optionally cropped."""
    with CutoutStore(src) as store:
        images, cat = store.images[:], store.catalog
    if size is not None:  # cropped, or padded with zeros
        images = np.pad(images, ((0, 0), (0, 0), (0, max(0, size - images.shape[2])),
                                 (0, max(0, size - images.shape[3]))))[:, :, :size, :size]
    if len(order) < images.shape[1]:
        images = images[:, :len(order)]
    return write_store(dst, images, bands=order, catalog={"id": list(cat["id"])}, **attrs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.train.conftest import write_synthetic_store
    root = tmp_path_factory.mktemp("ckpt")
    store = write_synthetic_store(root / "tiny.h5", n=96)
    run = root / "run"
    train(tiny_config(epochs=1, objective="ae"), store, run)
    return store, run


def test_checkpoint_records_the_data_contract(trained):
    store, run = trained
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    contract = DataContract.from_dict(state["contract"])
    assert (contract.bands, contract.stamp_size, contract.units) == ("griz", (32, 32), "counts")
    assert contract.pixel_scale == pytest.approx(0.263) and contract.zeropoint == 30.0
    assert contract.normalize["method"] == "asinh" and len(contract.sky_sigma) == 4
    assert load_model(run / "checkpoints" / "last.pt").contract == contract


def test_resume_refuses_other_band_order(trained, tmp_path):
    store, run = trained
    other = _reordered(store, tmp_path / "rigz.h5")
    with pytest.raises(GalmocoError, match=r"rigz.h5: bands 'rigz' \(4, in this order\) but .*last.pt was "
                                           r"trained on 'griz' \(4\)"):
        train(tiny_config(epochs=2, objective="ae"), other, run, resume=True)


@pytest.mark.parametrize(("order", "size", "attrs", "match"), [
    ("rigz", None, {}, "bands 'rigz'"),
    ("gri", None, {}, r"bands 'gri' \(3, in this order\) but .* was trained on 'griz' \(4\)"),
    ("griz", 24, {}, "stamps are 24x24 pixels but .* was trained on 32x32; allow another size"),
    ("griz", 40, {}, "stamps are 40x40 pixels but .* was trained on 32x32; centre-crop them to 32x32 "
                     r"\(`galmoco pack --size 32`\) or allow another size"),
    ("griz", None, {"units": "nanomaggies", "zeropoint": 22.5}, "flux units 'nanomaggies'"),
])
def test_embed_refuses_other_data(trained, tmp_path, order, size, attrs, match):
    store, run = trained
    other = _reordered(store, tmp_path / "other.h5", order, size, **attrs)
    with pytest.raises(GalmocoError, match=match):
        embed_store(run, other, tmp_path / "e.parquet", device="cpu")
    assert not (tmp_path / "e.parquet").exists()


def test_allow_size_embeds_another_size(trained, tmp_path):
    store, run = trained
    other = _reordered(store, tmp_path / "small.h5", "griz", 24)
    assert embed_store(run, other, tmp_path / "e.parquet", device="cpu", allow_size=True).is_file()


def test_old_checkpoint_without_contract_loads_and_warns(trained, tmp_path, caplog):
    store, run = trained
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    del state["contract"]
    old = save_checkpoint(state, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING):
        model = load_model(old)
    assert "records no data contract" in caplog.text
    assert model.contract == DataContract("griz", 32, normalize=state["config"]["normalize"],
                                          sky_sigma=tuple(state["sky_sigma"]))
    with pytest.raises(GalmocoError, match="bands 'rigz'"):  # what it can derive is still checked
        embed_store(old, _reordered(store, tmp_path / "rigz.h5"), tmp_path / "e.parquet", device="cpu")


def test_unreadable_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"x": np.arange(3)}, bad)  # a numpy array: refused by weights_only with paragraphs of advice
    with pytest.raises(GalmocoError) as err:
        load_checkpoint(bad)
    assert str(err.value).startswith(f"{bad}: not a readable checkpoint (") and "\n" not in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GalmocoError) as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(err.value)
