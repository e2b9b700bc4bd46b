"""galmoco.io.pack and ``galmoco pack``: values, skips, catalogue join, kill-and-resume, CLI."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from astropy.table import Table

from galmoco.cli import main
from galmoco.errors import GalmocoError
from galmoco.io.pack import pack_cutouts
from galmoco.io.pack_store import PartialStore
from galmoco.io.store import CutoutStore, read_catalog


def _job(root, writers, n, bands="griz", shape=(8, 8)):
    return [writers.des_object(root / "DES0001+0001", f"DESJ{i:05d}", bands=bands, shape=shape, seed=i,
                               ra=10.0 + i * 1e-3, dec=-5.0) for i in range(n)]


def test_pack_hundreds_value_for_value(tmp_path, writers):
    objs = _job(tmp_path / "job", writers, 250, bands="rg")
    out = tmp_path / "d.h5"
    result = pack_cutouts(tmp_path / "job", out, bands="rg", workers=2)
    assert (result.n_packed, result.skipped, result.skipped_csv) == (250, [], None)
    assert not (tmp_path / "d.h5.partial").exists()
    with CutoutStore(out) as store:
        assert len(store) == 250 and store.bands == ("r", "g") and store.shape == (2, 8, 8)
        assert store.images.chunks == (1, 2, 8, 8) and store.weights.chunks == (1, 2, 8, 8)
        assert store.attrs["complete"] and store.attrs["units"] == "counts"
        assert store.attrs["pixel_scale"] == pytest.approx(0.263) and store.attrs["galmoco_version"]
        images, weights = store.images[:], store.weights[:]
    for i, obj in enumerate(objs):
        assert np.array_equal(images[i], obj["image"]) and np.array_equal(weights[i], obj["weight"])
    cat = read_catalog(out)
    assert list(cat["id"]) == [f"DESJ{i:05d}" for i in range(250)]
    assert np.allclose(cat["ra"], [o["ra"] for o in objs]) and np.all(cat["dec"] == -5.0)
    assert cat["source"][7] == str(objs[7]["folder"]) and not cat["padded"].any()


def test_skips_are_listed_and_strict_fails(tmp_path, writers):
    _job(tmp_path / "job", writers, 4, bands="griz")
    writers.des_object(tmp_path / "job" / "DES0001+0001", "DESJnoz", bands="gri")
    bad = tmp_path / "job" / "DES0001+0001" / "DESJ00002" / "DESJ00002_r.fits"
    bad.write_bytes(bad.read_bytes()[:5000])
    result = pack_cutouts(tmp_path / "job", tmp_path / "d.h5", workers=1)
    assert result.n_packed == 3
    reasons = {s.id: s.reason for s in result.skipped}
    assert set(reasons) == {"DESJ00002", "DESJnoz"}
    assert "DESJ00002_r.fits: truncated FITS file" in reasons["DESJ00002"]
    assert "band(s) z missing" in reasons["DESJnoz"]
    with open(result.skipped_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert result.skipped_csv == tmp_path / "d.h5.skipped.csv"
    assert [(r["id"], r["reason"]) for r in rows] == [(s.id, s.reason) for s in result.skipped]
    with pytest.raises(GalmocoError, match=r"DESJ00002_r\.fits: truncated .*strict"):
        pack_cutouts(tmp_path / "job", tmp_path / "s.h5", workers=1, strict=True)
    assert not (tmp_path / "s.h5").exists()


def test_list_files_duplicates_and_shape_rules(tmp_path, writers):
    objs = _job(tmp_path / "job", writers, 3, shape=(10, 10))
    small = writers.des_object(tmp_path / "job2", "DESJsmall", shape=(10, 8))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# sources\njob/DES0001+0001/DESJ00001\n{objs[0]['folder']}\nmissing_dir\n"
                       f"{small['folder']}\n")
    as_csv = tmp_path / "list.csv"
    as_csv.write_text(f"path,note\n{objs[2]['folder']},x\n")
    result = pack_cutouts([listing, as_csv, objs[1]["folder"]], tmp_path / "d.h5", size=10, workers=1)
    assert list(read_catalog(tmp_path / "d.h5")["id"]) == ["DESJ00001", "DESJ00000", "DESJ00002"]
    reasons = {s.id: s.reason for s in result.skipped}
    assert "no such file" in reasons["missing_dir"]
    assert "smaller than the requested 10x10" in reasons["DESJsmall"]
    assert "duplicate id" in reasons["DESJ00001"]
    padded = pack_cutouts(small["folder"], tmp_path / "p.h5", size=10, pad=True, workers=1)
    assert padded.n_packed == 1 and read_catalog(tmp_path / "p.h5")["padded"][0]


def test_mixed_units_are_skipped(tmp_path, writers):
    writers.des_object(tmp_path / "src", "DESJa", shape=(8, 8))
    writers.ls_cube(tmp_path / "src" / "zz.fits", shape=(8, 8))
    result = pack_cutouts(tmp_path / "src", tmp_path / "d.h5", workers=1)
    assert result.n_packed == 1 and "units nanomaggies ZP 22.5 differ" in result.skipped[0].reason


def test_catalog_join(tmp_path, writers):
    _job(tmp_path / "job", writers, 3)
    cat = tmp_path / "truth.csv"
    cat.write_text("name,mag,ra,kind\nDESJ00002,21.5,1.0,spiral\nDESJ00000,19.0,2.0,elliptical\nDESJ99,1,1,x\n")
    pack_cutouts(tmp_path / "job", tmp_path / "d.h5", workers=1, catalog=cat, catalog_id_column="name")
    table = read_catalog(tmp_path / "d.h5")
    assert list(table["in_catalog"]) == [True, False, True]
    assert list(table["mag"][[0, 2]]) == [19.0, 21.5] and np.isnan(table["mag"][1])
    assert list(table["kind"]) == ["elliptical", "", "spiral"]
    assert list(table["ra_catalog"][[0, 2]]) == [2.0, 1.0] and table["ra"][0] == pytest.approx(10.0)
    fits_cat = tmp_path / "truth.fits"  # FITS tables are big-endian; the store keeps native order
    Table({"id": ["DESJ00001"], "size": np.array([2.5], ">f8"), "n": np.array([3], ">i8")}).write(fits_cat)
    pack_cutouts(tmp_path / "job", tmp_path / "f.h5", workers=1, catalog=fits_cat)
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["catalog"].dtype["size"] == np.dtype("=f8") and f["catalog"].dtype["n"] == np.dtype("=i8")
    assert list(read_catalog(tmp_path / "f.h5")["n"]) == [-1, 3, -1]
    with pytest.raises(GalmocoError, match=r"truth\.csv: no id column 'id'"):
        pack_cutouts(tmp_path / "job", tmp_path / "e.h5", catalog=cat)
    cat.write_text("id,mag\nA,1\nB,2\nA,3\n")
    with pytest.raises(GalmocoError, match=r"truth\.csv: row 3 repeats id 'A'"):
        pack_cutouts(tmp_path / "job", tmp_path / "e.h5", catalog=cat)


def test_bad_inputs_and_partial_guards(tmp_path, writers):
    with pytest.raises(GalmocoError, match=r"nowhere: no such file or folder"):
        pack_cutouts(tmp_path / "nowhere", tmp_path / "d.h5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalmocoError, match=r"empty: no FITS cutouts under this folder"):
        pack_cutouts(tmp_path / "empty", tmp_path / "d.h5")
    bad_list = tmp_path / "list.csv"
    bad_list.write_text("path,x\n,1\n")
    with pytest.raises(GalmocoError, match=r"list\.csv: row 2 has no value in the 'path' column"):
        pack_cutouts(bad_list, tmp_path / "d.h5")
    _job(tmp_path / "job", writers, 2)
    (tmp_path / "d.h5.partial").write_bytes(b"")
    with pytest.raises(GalmocoError, match=r"d\.h5\.partial: an interrupted pack is here"):
        pack_cutouts(tmp_path / "job", tmp_path / "d.h5")
    with pytest.raises(GalmocoError, match=r"d\.h5\.partial: cannot resume, the file is damaged"):
        pack_cutouts(tmp_path / "job", tmp_path / "d.h5", resume=True)
    with pytest.raises(GalmocoError, match=r"x\.h5\.partial: nothing to resume"):
        pack_cutouts(tmp_path / "job", tmp_path / "x.h5", resume=True)
    with pytest.raises(GalmocoError, match=r"no object could be packed"):
        pack_cutouts(tmp_path / "job", tmp_path / "y.h5", bands="y")


def test_a_file_system_without_hard_links_packs_alike(tmp_path, writers, monkeypatch):
    """``os.link`` fails as on FAT (EPERM; no such file system can be mounted here): the partial is
    created in place, still exclusively and locked, and the store equals one packed with links."""
    _job(tmp_path / "job", writers, 3)
    pack_cutouts(tmp_path / "job", tmp_path / "linked.h5", workers=1)

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(os, "link", no_links)
    pack_cutouts(tmp_path / "job", tmp_path / "inplace.h5", workers=1)
    with CutoutStore(tmp_path / "linked.h5") as a, CutoutStore(tmp_path / "inplace.h5") as b:
        assert np.array_equal(a.read_batch(np.arange(3)), b.read_batch(np.arange(3)))
        assert list(a.catalog["id"]) == list(b.catalog["id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inplace.h5", "job", "linked.h5"]
    partial = tmp_path / "x.h5.partial"
    first = PartialStore.create(partial, ("g",), pad=False)
    try:
        with pytest.raises(GalmocoError, match=r"x\.h5\.partial: another galmoco pack is writing this file"):
            PartialStore.create(partial, ("g",), pad=False)
        with h5py.File(partial, "r", locking=False) as f:
            assert f.attrs["bands"] == "g" and f.attrs["n_written"] == 0
    finally:
        first.close()

    def broken_links(src, dst, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "link", broken_links)
    with pytest.raises(OSError, match="Input/output error"):
        PartialStore.create(tmp_path / "y.h5.partial", ("g",), pad=False)
    assert not (tmp_path / "y.h5.partial").exists()


def test_resume_requires_the_same_options(tmp_path, writers):
    _job(tmp_path / "job", writers, 2)
    pack_cutouts(tmp_path / "job", tmp_path / "d.h5", workers=1)
    os.replace(tmp_path / "d.h5", tmp_path / "d.h5.partial")
    with pytest.raises(GalmocoError, match=r"d\.h5\.partial: was started with bands=griz"):
        pack_cutouts(tmp_path / "job", tmp_path / "d.h5", bands="gri", resume=True)


def _cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``galmoco pack ARGS`` through the real entry point; (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(["pack", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_pack(tmp_path, writers, capsys):
    n = 1500
    images = writers.des_clones(tmp_path / "job", n)
    out, partial = tmp_path / "killed.h5", tmp_path / "killed.h5.partial"
    command = [sys.executable, "-m", "galmoco", "pack", tmp_path / "job", "-o", out, "--bands", "g",
               "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill once about a third is on disk
        assert not out.exists()
        if partial.exists() and partial.stat().st_size > n * 2 * 8 * 8 * 4 / 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the pack finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.exists()
    with h5py.File(partial, "r") as h5:
        assert not h5.attrs["complete"] and 0 < h5.attrs["n_written"] < n
        n_before = int(h5.attrs["n_written"])
    code, stdout, stderr = _cli(capsys, tmp_path / "job", "-o", out, "--bands", "g", "--workers", "2",
                                "--resume")
    assert code == 0, stderr
    assert f"packed {n} objects ({n_before} from the interrupted run)" in stdout and not partial.exists()
    pack_cutouts(tmp_path / "job", tmp_path / "clean.h5", bands="g", workers=1)
    with CutoutStore(out) as a, CutoutStore(tmp_path / "clean.h5") as b:
        assert np.array_equal(a.images[:], b.images[:]) and np.array_equal(a.weights[:], b.weights[:])
        assert np.array_equal(a.images[:, 0], np.stack(images))
        assert a.catalog.pformat(max_lines=-1) == b.catalog.pformat(max_lines=-1)
        assert a.attrs == b.attrs


def test_cli_summary_and_exit_codes(tmp_path, writers, capsys):
    _job(tmp_path / "job", writers, 3)
    bad = tmp_path / "job" / "DES0001+0001" / "DESJ00001" / "DESJ00001_g.fits"
    bad.write_text("garbage")
    code, out, err = _cli(capsys, tmp_path / "job", "-o", tmp_path / "d.h5", "--bands", "gri",
                          "--workers", "1")
    assert code == 0, err
    assert "packed 2 objects, skipped 1, in" in out and f"{tmp_path / 'd.h5.skipped.csv'}" in out
    code, out, err = _cli(capsys, tmp_path / "job", "-o", tmp_path / "s.h5", "--strict", "--workers", "1")
    assert code == 1 and err.startswith("Error:") and len(err.strip().splitlines()) == 1
    assert "DESJ00001_g.fits: not a readable FITS" in err
    for option in (["--workers", "0"], ["--bands", "gq"], ["--size", "-3"], ["--frobnicate"]):
        code, _, err = _cli(capsys, tmp_path / "job", "-o", tmp_path / "u.h5", *option)
        assert code == 2, (option, err)
    code, _, err = _cli(capsys, tmp_path / "nope", "-o", tmp_path / "u.h5")
    assert code == 1 and "nope: no such file or folder" in err
    code, _, err = _cli(capsys, tmp_path / "job", "-o", tmp_path / "u.h5", "--pad")
    assert code == 2 and "--pad needs --size" in err and not (tmp_path / "u.h5").exists()


def test_pad_needs_a_size(tmp_path, writers):
    _job(tmp_path / "job", writers, 2)
    with pytest.raises(GalmocoError, match="pad needs size"):
        pack_cutouts(tmp_path / "job", tmp_path / "d.h5", pad=True, workers=1)
    assert not list(tmp_path.glob("d.h5*"))


def _stuck_pack(tmp_path, out) -> subprocess.Popen:
    """A real ``galmoco pack`` process stuck reading its first source (a FIFO nobody writes to), so it
    holds its ``.partial`` before any object is flushed; returned once that file exists."""
    fifo = tmp_path / "stuck.fits"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "galmoco", "pack", fifo, tmp_path / "job", "-o", out,
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = out.with_name(out.name + ".partial")
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if not partial.exists():
        proc.kill()
        pytest.fail(f"no {partial} while the pack reads its first source: {proc.communicate()[1]!r}")
    return proc


def test_a_second_pack_on_a_running_output_is_refused_and_harms_nothing(tmp_path, writers, capsys):
    _job(tmp_path / "job", writers, 3)
    out = tmp_path / "d.h5"
    partial = tmp_path / "d.h5.partial"
    first = _stuck_pack(tmp_path, out)
    try:
        inode = partial.stat().st_ino
        for extra in ([], ["--resume"]):
            code, _, err = _cli(capsys, tmp_path / "job", "-o", out, "--workers", "1", *extra)
            assert code == 1 and "d.h5.partial: another galmoco pack is writing this file now" in err, err
            assert "delete" not in err and partial.stat().st_ino == inode and first.poll() is None
    finally:
        first.kill()
        first.wait()
    code, out_text, err = _cli(capsys, tmp_path / "job", "-o", out, "--workers", "1", "--resume")
    assert code == 0 and "packed 3 objects" in out_text, err


def test_sigkill_before_the_first_flush_leaves_a_resumable_partial(tmp_path, writers, capsys):
    objs = _job(tmp_path / "job", writers, 3)
    out = tmp_path / "d.h5"
    first = _stuck_pack(tmp_path, out)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with h5py.File(tmp_path / "d.h5.partial", "r") as h5:
        assert h5.attrs["n_written"] == 0 and not h5.attrs["complete"] and "images" not in h5
    code, stdout, err = _cli(capsys, tmp_path / "job", "-o", out, "--workers", "1", "--resume")
    assert code == 0 and "packed 3 objects, skipped 0" in stdout, err
    with CutoutStore(out) as store:
        assert np.array_equal(store.images[:], np.stack([o["image"] for o in objs]))
    assert not (tmp_path / "d.h5.partial").exists()


def test_without_size_the_most_common_size_decides_not_the_first(tmp_path, writers):
    edge = writers.des_object(tmp_path / "edge", "DESJedge", shape=(8, 6))  # trimmed at a tile edge
    _job(tmp_path / "job", writers, 3, shape=(8, 8))
    result = pack_cutouts([edge["folder"], tmp_path / "job"], tmp_path / "d.h5", workers=1)
    assert result.n_packed == 3 and [s.id for s in result.skipped] == ["DESJedge"]
    assert "shape (4, 8, 6) differs from the store's (4, 8, 8)" in result.skipped[0].reason
    assert list(read_catalog(tmp_path / "d.h5")["id"]) == ["DESJ00000", "DESJ00001", "DESJ00002"]
    pack_cutouts([edge["folder"], tmp_path / "job" / "DES0001+0001" / "DESJ00001"],
                 tmp_path / "t.h5", workers=1)  # one each: the larger, untrimmed size wins
    assert list(read_catalog(tmp_path / "t.h5")["id"]) == ["DESJ00001"]


def test_catalog_join_reports_matches_and_fails_when_none_match(tmp_path, writers, capsys):
    _job(tmp_path / "job", writers, 3)
    cat = tmp_path / "truth.csv"
    cat.write_text("id,mag\nDESJ00002,21.5\nDESJ00000,19.0\n")
    code, out, err = _cli(capsys, tmp_path / "job", "-o", tmp_path / "d.h5", "--workers", "1",
                          "--catalog", cat)
    assert code == 0 and "catalogue: 2 of 3 objects matched, 1 unmatched" in out, err
    cat.write_text("id,mag\nJ0226-1541,21.5\nJ0226-1542,19.0\n")
    expected = (r"truth\.csv: none of the 3 object ids matches column 'id' \(objects look like 'DESJ00000', "
                r"the catalogue like 'J0226-1541'\)")
    with pytest.raises(GalmocoError, match=expected):
        pack_cutouts(tmp_path / "job", tmp_path / "e.h5", workers=1, catalog=cat)
    assert not list(tmp_path.glob("e.h5*"))


def test_path_lists_with_a_utf8_bom(tmp_path, writers):
    objs = _job(tmp_path / "job", writers, 2)
    text_list, csv_list = tmp_path / "list.txt", tmp_path / "list.csv"
    text_list.write_text(f"{objs[0]['folder']}\n", encoding="utf-8-sig")
    csv_list.write_text(f"path,note\n{objs[1]['folder']},x\n", encoding="utf-8-sig")
    result = pack_cutouts([text_list, csv_list], tmp_path / "d.h5", workers=1)
    assert (result.n_packed, result.skipped) == (2, [])


def test_outputs_follow_the_umask(tmp_path, writers):
    _job(tmp_path / "job", writers, 2)
    (tmp_path / "job" / "DES0001+0001" / "DESJ00001" / "DESJ00001_g.fits").write_text("garbage")
    old = os.umask(0o002)
    try:
        result = pack_cutouts(tmp_path / "job", tmp_path / "d.h5", workers=1)
    finally:
        os.umask(old)
    assert result.skipped_csv is not None
    for path in (result.path, result.skipped_csv):
        assert path.stat().st_mode & 0o777 == 0o664, path


@pytest.mark.slow
def test_two_packs_started_together_on_one_output(tmp_path, writers):
    images = writers.des_clones(tmp_path / "job", 200)
    out = tmp_path / "d.h5"
    command = [sys.executable, "-m", "galmoco", "pack", tmp_path / "job", "-o", out, "--bands", "g",
               "--workers", "1"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    assert 0 in [code for code, _, _ in results], results
    for code, _, err in results:  # the other finished first, or was refused without harm
        assert code == 0 or (code == 1 and "another galmoco pack is writing this file now" in err), err
    with CutoutStore(out) as store:
        assert np.array_equal(store.images[:, 0], np.stack(images))
    assert not (tmp_path / "d.h5.partial").exists()
