"""End-to-end training on a tiny synthetic store: learning, resume equality, checkpoints, NaN stop."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from galmoco.errors import GalmocoError
from galmoco.models import GalaxyModel
from galmoco.train import load_model, loop, train
from galmoco.train.build import lr_factor
from galmoco.train.loop import epoch_batches
from galmoco.train.run_folder import METRIC_COLUMNS

from .conftest import tiny_config, write_synthetic_store


def _losses(run_dir: Path) -> list[tuple[str, ...]]:
    with (run_dir / "metrics.csv").open() as fh:
        return [(r["epoch"], r["step"], r["loss"], r["loss_contrastive"], r["loss_recon"])
                for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_moco_ae_learns_and_writes_the_run_dir(tiny_store, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(epochs=3), tiny_store, run)
    assert result.epochs == 3 and result.steps == 3 * (173 // 32)  # 192 - 19 held out, last batch dropped
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert any((run / "tensorboard").iterdir())
    with (run / "metrics.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        rows = list(reader)
    recon = [float(r["loss_recon"]) for r in rows]
    assert recon[-1] < recon[0]  # the reconstruction improves
    assert float(rows[-1]["knn_acc"]) > 0.5  # three balanced classes: chance is 1/3
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["queue_size"] == 64  # auto: a batch multiple <= 173 / 2
    assert set(state["objective"]) >= {"queue.keys", "queue.ptr"}
    assert any(k.startswith("key_encoder.") for k in state["objective"])
    model = load_model(run / "checkpoints" / "last.pt")
    assert isinstance(model, GalaxyModel) and not model.training
    with h5py.File(tiny_store) as h5:
        images = torch.from_numpy(h5["images"][:4])
    with torch.no_grad():
        assert model.encode(images).shape == (4, 32)
        assert model.reconstruct(images).shape == images.shape
        assert torch.allclose(model.project(model.encode(images)).norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.slow
def test_moco_ae_trains_on_a_side_the_stages_do_not_divide(tmp_path):
    # 36 px with three stride-2 stages (8 does not divide it), as DESaccess's 228 px with four
    store = write_synthetic_store(tmp_path / "odd.h5", size=36)
    run = tmp_path / "run"
    train(tiny_config(epochs=3), store, run)
    with (run / "metrics.csv").open() as fh:
        recon = [float(r["loss_recon"]) for r in csv.DictReader(fh)]
    assert recon[-1] < recon[0]
    model = load_model(run / "checkpoints" / "last.pt")
    with h5py.File(store) as h5:
        images = torch.from_numpy(h5["images"][:4])
    with torch.no_grad():
        assert model.reconstruct(images).shape == (4, 4, 36, 36)


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tiny_store, tmp_path, monkeypatch):
    full = train(tiny_config(epochs=2), tiny_store, tmp_path / "full")

    def ctrl_c_before_epoch_2(n, batch_size, seed, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return epoch_batches(n, batch_size, seed, epoch)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "epoch_batches", ctrl_c_before_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=2), tiny_store, tmp_path / "part")
    assert len(_losses(tmp_path / "part")) == 1
    resumed = train(tiny_config(epochs=2), tiny_store, tmp_path / "part", resume=True)
    assert resumed.epochs == 2 and resumed.steps == full.steps
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    a = torch.load(full.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["objective"]["queue.keys"], b["objective"]["queue.keys"])


def test_existing_run_needs_resume_and_resume_needs_checkpoint(tiny_store, tmp_path):
    with pytest.raises(GalmocoError, match="no such checkpoint"):
        train(tiny_config(), tiny_store, tmp_path / "none", resume=True)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(GalmocoError, match="--resume"):
        train(tiny_config(), tiny_store, tmp_path / "run")


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_store, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=1, objective="ae"), tiny_store, run)
    ckpt = run / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    with h5py.File(tiny_store, "r+") as h5:  # poison the data after the first epoch
        h5["images"][...] = np.nan
    with pytest.raises(GalmocoError, match=r"loss is nan at epoch 2, step 6 .*last good checkpoint"):
        train(tiny_config(epochs=2, objective="ae"), tiny_store, run, resume=True)
    assert ckpt.read_bytes() == before
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_ctrl_c_saves_checkpoint_mid_epoch(tiny_store, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=1, objective="ae")
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def interrupt_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_store, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 2, 2)


def test_small_dataset_queue_warning(tiny_store, tmp_path, caplog):
    cfg = dataclasses.replace(tiny_config(epochs=1, objective="moco"), label_column="")
    cfg.moco.queue_size = 128
    train(cfg, tiny_store, tmp_path / "run")
    assert "positives will often sit in the queue" in caplog.text


def test_epoch_batches_and_schedule():
    a = epoch_batches(10, 3, seed=1, epoch=0)
    assert len(a) == 3 and all(len(b) == 3 for b in a) and len({i for b in a for i in b}) == 9
    assert a == epoch_batches(10, 3, seed=1, epoch=0) != epoch_batches(10, 3, seed=1, epoch=1)
    assert lr_factor(0, 100, 10, True) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, True) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, True) == pytest.approx(0.0)
    assert [lr_factor(s, 100, 0, False) for s in (59, 60, 80)] == pytest.approx([1.0, 0.1, 0.01])
