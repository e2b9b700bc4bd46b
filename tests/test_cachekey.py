"""Keys of cached products: equal inputs reuse, other inputs or an interrupted rewrite recompute."""

from __future__ import annotations

import hashlib
import json

import pytest

from galmoco.cachekey import file_sha256, is_current, key_path, keyed_output, write_key


def test_key_round_trip_and_mismatch(tmp_path):
    product = tmp_path / "p.csv"
    product.write_text("a\n")
    write_key(product, {"columns": ("class", "mag"), "metric": "l1"})
    assert json.loads(key_path(product).read_text()) == {"columns": ["class", "mag"], "metric": "l1"}
    assert is_current(product, {"metric": "l1", "columns": ["class", "mag"]})
    assert not is_current(product, {"metric": "l2", "columns": ["class", "mag"]})
    assert not is_current(tmp_path / "missing.csv", {"metric": "l1"})


def test_an_interrupted_rewrite_leaves_the_product_unkeyed(tmp_path):
    product = tmp_path / "p.csv"
    product.write_text("old\n")
    write_key(product, {"n": 1})
    with pytest.raises(RuntimeError), keyed_output(product, {"n": 2}):
        product.write_text("half")
        raise RuntimeError("killed")
    assert not key_path(product).exists() and not is_current(product, {"n": 1})
    with keyed_output(product, {"n": 2}):
        product.write_text("new\n")
    assert is_current(product, {"n": 2})


def test_file_sha256(tmp_path):
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
