"""galmoco.similarity.query and the ``galmoco index`` / ``galmoco search`` commands: answers equal brute
force, the query is not its own neighbour, positions match within the radius, files and exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from galmoco.analysis.gallery import neighbour_gallery_png
from galmoco.embed import embed_store, read_embeddings
from galmoco.errors import GalmocoError
from galmoco.io.tables import read_table
from galmoco.similarity.index import build_index
from galmoco.similarity.query import search, search_ids, search_radec


def galmoco(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galmoco", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, store_path, run_dir):
    root = tmp_path_factory.mktemp("search")
    emb = embed_store(run_dir, store_path, root / "emb.parquet", device="cpu")
    return emb, build_index(emb, root / "idx")


def test_search_by_id_equals_brute_force(indexed):
    emb, idx = indexed
    table = read_embeddings(emb)
    x = np.asarray(table["latent"], np.float64)
    answer = search_ids(idx, ["obj005", "obj017"], k=4)
    assert len(answer) == 8 and answer.colnames[:3] == ["query", "rank", "id"]
    for query in ("obj005", "obj017"):
        row = list(table["id"]).index(query)
        d = np.linalg.norm(x - x[row], axis=1)
        d[row] = np.inf
        want = np.argsort(d)[:4]
        got = answer[answer["query"] == query]
        assert list(got["id"]) == [table["id"][i] for i in want] and list(got["rank"]) == [1, 2, 3, 4]
        np.testing.assert_allclose(got["distance"], d[want], rtol=1e-4)
    with pytest.raises(GalmocoError, match="ids not in the index: nope"):
        search_ids(idx, ["nope"])


def test_search_by_position(indexed):
    emb, idx = indexed
    table = read_embeddings(emb)
    ra, dec = float(table["ra"][9]), float(table["dec"][9])
    near = search_radec(idx, ra + 0.5 / 3600 / np.cos(np.radians(dec)), dec, radius_arcsec=1.0, k=3)
    assert set(near["query"]) == {"obj009"} and "obj009" not in list(near["id"])
    with pytest.raises(GalmocoError, match=r"no indexed galaxy within 0.1 arcsec of RA .* \(nearest: 0.5 "):
        search_radec(idx, ra + 0.5 / 3600 / np.cos(np.radians(dec)), dec, radius_arcsec=0.1)
    both, images = search(idx, ids=["obj001"], radec=(ra, dec), k=2)
    assert list(both["query"]) == ["obj001", "obj001", "obj009", "obj009"] and images is None


def test_gallery_png(indexed, tmp_path):
    _, idx = indexed
    png = neighbour_gallery_png(idx, search_ids(idx, ["obj001", "obj002"], k=3), tmp_path / "g.png")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_index_and_search_commands(tmp_path, indexed):
    emb, _ = indexed
    done = galmoco("index", emb, "-o", tmp_path / "idx", "--neighbours", 3, "--chunk", 10)
    assert done.returncode == 0, done.stderr
    assert "flat index of 48 vectors, l2, recall@10 1.0" in done.stdout
    assert (tmp_path / "idx" / "neighbours" / "done.json").is_file()
    done = galmoco("search", tmp_path / "idx", "--id", "obj003", "-k", 3, "-o", tmp_path / "s.csv",
                   "--gallery", tmp_path / "s.png")
    assert done.returncode == 0, done.stderr
    table = read_table(tmp_path / "s.csv")
    assert list(table["rank"]) == [1, 2, 3] and set(table["query"]) == {"obj003"}
    assert "obj003" in done.stdout and (tmp_path / "s.png").is_file()
    done = galmoco("search", tmp_path / "idx", "--radec", "200 80")
    assert done.returncode == 1 and done.stderr.startswith("Error: no indexed galaxy within 2 arcsec")
    assert len(done.stderr.strip().splitlines()) == 1
