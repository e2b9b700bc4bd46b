"""``galmoco train`` end to end in a subprocess."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
import yaml


def _galmoco(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galmoco", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_train_and_resume(tiny_store, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("num_threads: 1\nmodel:\n  widths: [8, 16, 32]\n  latent_dim: 16\n  proj_dim: 16\n"
                   "moco:\n  bn_splits: 4\n")
    run = tmp_path / "run"
    res = _galmoco("train", str(tiny_store), "-o", str(run), "--config", str(cfg), "--epochs", "1",
                   "--batch-size", "32", "--device", "cpu", "--mlp", "--step-schedule",
                   "--temperature", "0.3", "--frame", "none")
    assert res.returncode == 0, res.stderr
    assert "trained 1 epochs" in res.stdout
    assert {p.name for p in run.iterdir()} == {"config.yaml", "metrics.csv", "checkpoints", "tensorboard"}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["model"]["head"] == "mlp" and saved["optim"]["cosine"] is False
    assert saved["moco"]["temperature"] == 0.3 and saved["model"]["latent_dim"] == 16
    assert saved["model"]["frame"] == "none"
    assert len(saved["sky_sigma"]) == 4
    with (run / "metrics.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 1
    again = _galmoco("train", str(tiny_store), "-o", str(run), "--epochs", "2", "--resume")
    assert again.returncode == 0, again.stderr
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["num_threads"] == 1  # the run's settings kept


@pytest.mark.slow
def test_cli_errors(tiny_store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 1\n")
    res = _galmoco("train", str(tiny_store), "-o", str(tmp_path / "r"), "--config", str(bad))
    assert res.returncode == 1
    assert "unknown key(s) optim.learning_rate" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _galmoco("train", str(tiny_store), "-o", str(tmp_path / "r"), "--objective", "simclr")
    assert res.returncode == 2
    res = _galmoco("train", str(tiny_store), "-o", str(tmp_path / "r"), "--frame", "d8")
    assert res.returncode == 2 and "'d8' is not one of 'd4', 'none'" in res.stderr
