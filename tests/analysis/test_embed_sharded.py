"""``galmoco embed`` under torchrun (2 CPU processes, gloo) over a store split in two files equals one
process on the whole store; the manifest reads as the whole table."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from galmoco.embed import embed_store, read_embeddings, shard_path
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore, write_store
from galmoco.io.storeset import StoreSet


def split_store(store_path, tmp_path, at: int = 30):
    """The store as two files (rows :at and at:) with the same catalogue columns."""
    with CutoutStore(store_path) as store:
        images, weights, cat = store.images[:], store.weights[:], store.catalog
    cols = {c: np.asarray(cat[c]) for c in cat.colnames}
    return [write_store(tmp_path / f"part{i}.h5", images[s], weights[s], {c: v[s] for c, v in cols.items()},
                        bands="griz")
            for i, s in enumerate((slice(0, at), slice(at, None)))]


def test_store_set_reads_across_files(store_path, tmp_path):
    parts = split_store(store_path, tmp_path)
    with StoreSet(parts) as both, CutoutStore(store_path) as one:
        assert len(both) == 48
        np.testing.assert_array_equal(both.read_rows(25, 35), one.images[25:35])
        cat = both.catalog(28, 32)
        assert list(cat["id"]) == list(one.catalog["id"][28:32])
        assert list(cat["store"]) == [str(parts[0])] * 2 + [str(parts[1])] * 2
    other = write_store(tmp_path / "gri.h5", np.zeros((2, 3, 16, 16)), bands="gri")
    with pytest.raises(GalmocoError, match=r"gri.h5: bands 'gri' \(3, in this order\) but .*part0.h5 was "
                                           r"trained on 'griz' \(4\) \(stores read together"):
        StoreSet([parts[0], other])


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_embed_equals_one_process(store_path, run_dir, tmp_path):
    parts = split_store(store_path, tmp_path)
    out = tmp_path / "emb.parquet"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "galmoco", "embed", run_dir, *parts, "-o", out, "--device", "cpu", "--batch-size", 7,
           "--transforms"]
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert shard_path(out, 0, 2).is_file() and shard_path(out, 1, 2).is_file()
    sharded = read_embeddings(out)
    single = read_embeddings(embed_store(run_dir, store_path, tmp_path / "one.parquet", device="cpu",
                                         transforms=True))
    assert list(sharded["id"]) == list(single["id"])
    for column in ("latent", "latent_rot90"):
        np.testing.assert_allclose(sharded[column], single[column], rtol=0, atol=1e-5)
    assert len(read_embeddings(shard_path(out, 0, 2))) == 24
