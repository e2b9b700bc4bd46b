"""The run folder: the lock held by a live run (two real processes), provenance.json, numbered checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from galmoco.errors import GalmocoError
from galmoco.train import train
from galmoco.train.loop import numbered_checkpoint
from galmoco.train.run_folder import RunLock, git_commit, store_digest

from .conftest import tiny_config, write_synthetic_store

_HOLD_LOCK = ("import sys; from galmoco.train.run_folder import RunLock\n"
              "with RunLock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()\n")


def _galmoco(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galmoco", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_second_run_into_a_locked_folder_is_refused(tmp_path):
    store = write_synthetic_store(tmp_path / "s.h5", n=48, size=16)
    run = tmp_path / "run"
    args = ("train", str(store), "-o", str(run), "--objective", "ae", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu", "--label-column", "", "--latent-dim", "8")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # the other process holds the folder now
        refused = _galmoco(*args)
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1
        assert f"another galmoco train (pid {holder.pid} on " in refused.stderr
        assert not (run / "config.yaml").exists()  # the refused run wrote nothing
    finally:
        holder.communicate("", timeout=60)  # the holder exits, and the OS drops its lock
    done = _galmoco(*args)
    assert done.returncode == 0, done.stderr
    assert (run / "checkpoints" / "last.pt").is_file()


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(GalmocoError, match="another galmoco train"), RunLock(tmp_path / "run"):
            pass
    with RunLock(tmp_path / "run"):  # free again
        pass


def test_failed_start_leaves_no_folder(tmp_path):
    store = write_synthetic_store(tmp_path / "s.h5", n=8, size=16)
    with pytest.raises(GalmocoError, match="fewer than one batch"):
        train(tiny_config(batch_size=32, label_column=""), store, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_provenance_and_numbered_checkpoints(tmp_path):
    store = write_synthetic_store(tmp_path / "s.h5", n=64, size=16)
    run = tmp_path / "run"
    config = tiny_config(objective="ae", epochs=2, checkpoint_every=2, label_column="")
    config.model.widths = (8, 16)
    train(config, store, run)
    config.epochs, config.checkpoint_every = 3, 1
    train(config, store, run, resume=True)
    kept = sorted(p.name for p in (run / "checkpoints").glob("checkpoint_*.pt"))
    assert kept == ["checkpoint_0002.pt", "checkpoint_0003.pt"]
    for epoch in (2, 3):
        assert torch.load(numbered_checkpoint(run, epoch), weights_only=True)["epoch"] == epoch
    runs = json.loads((run / "provenance.json").read_text())["runs"]
    assert [r["resume"] for r in runs] == [False, True]
    first = runs[0]
    assert first["dataset"] == str(store.resolve())
    assert first["dataset_digest"] == store_digest(store) and first["dataset_digest"].startswith("blake2b:")
    assert first["torch"] == torch.__version__ and first["cuda"] == torch.version.cuda
    assert first["world_size"] == 1 and first["device"] == "cpu"
    assert first["galmoco_version"] and "command" in first and first["python"].count(".") == 2


def test_store_digest_follows_content_not_cached_masks(tmp_path):
    store = write_synthetic_store(tmp_path / "s.h5", n=12, size=16)
    before = store_digest(store)
    with h5py.File(store, "r+") as h5:  # a cached sky mask is derived data: the content is the same
        h5.create_dataset("masks/segmentation", data=np.ones((12, 16, 16), np.float32))
    assert store_digest(store) == before
    with h5py.File(store, "r+") as h5:
        h5["images"][3, 1, 7, 7] += 1.0
    changed = store_digest(store)
    assert changed != before
    with h5py.File(store, "r+") as h5:  # one catalogue value changed
        catalog, dtype = h5["catalog"][:], h5["catalog"].dtype
        catalog["id"][0] = b"renamed"
        del h5["catalog"]
        h5.create_dataset("catalog", data=catalog, dtype=dtype)
    assert store_digest(store) != changed


def test_git_commit(tmp_path):
    assert git_commit(tmp_path) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head and len(head) == 40
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path) == head + "+dirty"
