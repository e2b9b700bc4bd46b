"""galmoco.io.store: CutoutStore, read_catalog, CutoutDataset (under a DataLoader with 2 workers)."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from galmoco.errors import GalmocoError
from galmoco.io import store as store_module
from galmoco.io.pack import pack_cutouts
from galmoco.io.store import (
    CutoutDataset,
    CutoutStore,
    _RowReader,
    read_catalog,
    write_store,
)


@pytest.fixture
def store(tmp_path, writers):
    """A packed store of 20 two-band objects (object i's pixels all differ) plus a cached mask."""
    objs = [writers.des_object(tmp_path / "job", f"DESJ{i:03d}", bands="gr", shape=(6, 6), seed=i)
            for i in range(20)]
    path = tmp_path / "d.h5"
    pack_cutouts(tmp_path / "job", path, bands="gr", workers=1)
    with h5py.File(path, "r+") as h5:
        h5.create_dataset("masks/sky", data=np.arange(20 * 36, dtype=np.float32).reshape(20, 6, 6))
    return path, objs


def test_store_reads(store):
    path, objs = store
    with CutoutStore(path) as s:
        assert len(s) == 20 and s.bands == ("g", "r") and s.shape == (2, 6, 6)
        assert s.attrs["bands"] == "gr" and s.attrs["zeropoint"] == 30.0
        assert np.array_equal(s.images[3], objs[3]["image"])
        assert list(s.catalog["id"][:2]) == ["DESJ000", "DESJ001"] and isinstance(s.catalog["id"][0], str)
        order = [7, 2, 2, 19, 0]
        assert np.array_equal(s.read_batch(order), np.stack([objs[i]["image"] for i in order]))
        expected = np.stack([o["weight"] for o in objs[4:9]])
        assert np.array_equal(s.read_batch(range(4, 9), "weights"), expected)
        assert s.read_batch([]).shape == (0, 2, 6, 6)
        with pytest.raises(GalmocoError, match=r"index out of range 0\.\.19"):
            s.read_batch([20])
        with pytest.raises(GalmocoError, match=r"no dataset 'masks/none'"):
            s.read_batch([0], "masks/none")
    cat = read_catalog(path)
    assert len(cat) == 20 and cat["source"][5] == str(objs[5]["folder"])


def test_store_refuses_partial_and_foreign_files(tmp_path, store):
    path, _ = store
    with h5py.File(path, "r+") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(GalmocoError, match=r"d\.h5: an incomplete pack \(complete=False\)"):
        CutoutStore(path)
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = 1
    with pytest.raises(GalmocoError, match=r"other\.h5: not a galmoco store"):
        read_catalog(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(GalmocoError, match=r"text\.h5: not a readable HDF5 file"):
        CutoutStore(tmp_path / "text.h5")
    with pytest.raises(GalmocoError, match=r"none\.h5: no such store file"):
        CutoutDataset(tmp_path / "none.h5")


def test_dataset_with_two_dataloader_workers(store):
    path, objs = store
    dataset = CutoutDataset(path, indices=[3, 17, 5, 11, 0, 9, 14], fields=("image", "weight", "masks/sky"))
    dataset[0]  # open in the parent first: the workers must not reuse this handle
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    rows, images, weights, masks = [], [], [], []
    for batch in loader:
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (2, 6, 6)
        rows += batch["index"].tolist()
        images.append(batch["image"].numpy())
        weights.append(batch["weight"].numpy())
        masks.append(batch["mask"].numpy())
    assert rows == [3, 17, 5, 11, 0, 9, 14]
    assert np.array_equal(np.concatenate(images), np.stack([objs[r]["image"] for r in rows]))
    assert np.array_equal(np.concatenate(weights), np.stack([objs[r]["weight"] for r in rows]))
    assert np.array_equal(np.concatenate(masks), np.arange(20 * 36, dtype=np.float32).reshape(20, 6, 6)[rows])


def test_dataset_defaults_pickling_and_errors(store):
    path, objs = store
    dataset = CutoutDataset(path)
    item = dataset[4]
    assert set(item) == {"image", "weight", "index"} and item["index"] == 4
    assert torch.equal(item["image"], torch.from_numpy(objs[4]["image"]))
    clone = pickle.loads(pickle.dumps(dataset))  # what spawn-started workers and DDP ranks receive
    assert clone._readers is None and len(clone) == 20 and torch.equal(clone[4]["weight"], item["weight"])
    with pytest.raises(GalmocoError, match=r"field 'masks/other' not in the store .*for sky rules"):
        CutoutDataset(path, fields=("image", "masks/other"))
    with pytest.raises(GalmocoError, match=r"indices out of range 0\.\.19"):
        CutoutDataset(path, indices=[0, 20])


@pytest.mark.parametrize("in_memory", [False, True])
def test_dataset_batched_fetch_from_file_and_memory(store, in_memory):
    path, objs = store
    rows = [3, 17, 5, 11, 0, 9, 14, 2]
    dataset = CutoutDataset(path, indices=rows, fields=("image", "weight", "masks/sky"), in_memory=in_memory)
    assert dataset.in_memory is in_memory
    with h5py.File(path, "r") as h5:  # pack's one-chunk rows take the direct path; the plain mask does not
        assert _RowReader(h5["images"]).direct and not _RowReader(h5["masks/sky"]).direct
    batches = [[6, 0, 3], [7, 1], [2, 5, 4]]  # positions in the dataset, as a batch sampler gives them
    seen = list(DataLoader(dataset, sampler=batches, batch_size=None))  # whole batches, as training reads
    assert seen[0]["image"].shape == (3, 2, 6, 6) and seen[0]["index"].dtype == torch.int64
    # per-object reads collated by a plain DataLoader give the same batches
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
               for a, b in zip(seen, DataLoader(dataset, batch_sampler=batches), strict=True))
    for positions, batch in zip(batches, seen, strict=True):
        expected = [rows[p] for p in positions]
        assert batch["index"].tolist() == expected
        assert np.array_equal(batch["image"].numpy(), np.stack([objs[r]["image"] for r in expected]))
        assert np.array_equal(batch["weight"].numpy(), np.stack([objs[r]["weight"] for r in expected]))
        masks = np.arange(20 * 36, dtype=np.float32).reshape(20, 6, 6)
        assert np.array_equal(batch["mask"].numpy(), masks[expected])
    assert torch.equal(dataset[1]["image"], torch.from_numpy(objs[17]["image"]))
    dataset[1]["image"].zero_()  # an item is the caller's to change: the held rows stay as they were
    assert torch.equal(dataset[1]["image"], torch.from_numpy(objs[17]["image"]))


def test_dataset_in_memory_by_size_and_filtered_rows(tmp_path, monkeypatch):
    images = np.random.default_rng(0).normal(size=(5, 2, 4, 4)).astype(np.float32)
    path = write_store(tmp_path / "m.h5", images, bands="gr")
    assert CutoutDataset(path).in_memory  # 5 small stamps
    monkeypatch.setattr(store_module, "IN_MEMORY_BYTES", 5 * 2 * 2 * 16 * 4 - 1)  # one byte short
    assert not CutoutDataset(path).in_memory
    with h5py.File(path, "r+") as h5:  # a compressed copy: rows are no longer raw chunks
        h5.create_dataset("masks/zipped", data=images[:, 0], chunks=(1, 4, 4), compression="gzip")
    dataset = CutoutDataset(path, fields=("image", "masks/zipped"), in_memory=False)
    assert not dataset._reader()["mask"].direct and dataset._reader()["image"].direct
    batch = dataset[[4, 1]]
    assert np.array_equal(batch["mask"].numpy(), images[[4, 1], 0])
    assert np.array_equal(batch["image"].numpy(), images[[4, 1]]) and batch["index"].tolist() == [4, 1]


def test_write_store_round_trip_and_defaults(tmp_path):
    images = np.arange(3 * 2 * 4 * 4, dtype=np.float64).reshape(3, 2, 4, 4)
    path = write_store(tmp_path / "m.h5", images, bands="gr", catalog={
        "ra": [1.0, 2.0, 3.0], "class": ["spiral", "elliptical", "empty"],
        "size": np.array([1, 2, 3], ">i8")})
    with CutoutStore(path) as s:
        assert s.bands == ("g", "r") and s.shape == (2, 4, 4) and len(s) == 3
        assert np.array_equal(s.read_batch([0, 2]), images[[0, 2]].astype(np.float32))
        assert np.array_equal(s.read_batch([1], "weights"), np.ones((1, 2, 4, 4), np.float32))
        assert s.attrs["complete"] and s.attrs["units"] == "counts"
    cat = read_catalog(path)
    assert list(cat["id"]) == ["obj0", "obj1", "obj2"] and list(cat["source"]) == ["memory"] * 3
    assert list(cat["ra"]) == [1.0, 2.0, 3.0] and np.isnan(cat["dec"]).all()
    assert list(cat["class"]) == ["spiral", "elliptical", "empty"] and list(cat["size"]) == [1, 2, 3]
    assert list(cat["n_bad_pixels"]) == [0, 0, 0] and not cat["padded"].any()
    item = CutoutDataset(path, fields=("image",))[1]
    assert torch.equal(item["image"], torch.from_numpy(images[1].astype(np.float32))) and item["index"] == 1


def test_write_store_rejects_mismatches_and_leaves_nothing(tmp_path):
    images = np.zeros((2, 4, 4, 4), np.float32)
    with pytest.raises(GalmocoError, match=r"must both be \(N, 3 bands, H, W\)"):
        write_store(tmp_path / "a.h5", images, bands="gri")
    with pytest.raises(GalmocoError, match=r"catalogue column 'ra' has 3 values for 2 stamps"):
        write_store(tmp_path / "a.h5", images, catalog={"ra": [1.0, 2.0, 3.0]})
    assert list(tmp_path.iterdir()) == []
