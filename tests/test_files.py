"""Atomic output files: whole or absent, temporary files cleaned up, permissions from the umask."""

from __future__ import annotations

import os

import pytest

from galmoco.files import atomic_output, atomic_write_text


def test_written_file_appears_whole_with_umask_permissions(tmp_path):
    old = os.umask(0o002)
    try:
        path = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert (path.stat().st_mode & 0o777) == 0o664  # group-readable and -writable, not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_failed_writer_leaves_nothing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


def test_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_output(tmp_path / "t.parquet") as tmp:
        assert tmp.suffix == ".parquet" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert (tmp_path / "t.parquet").read_bytes() == b"x"
