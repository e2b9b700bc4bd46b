"""``galmoco train`` end to end in a subprocess."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml


def _galmoco(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galmoco", *args], capture_output=True, text=True,
                          timeout=300)


def _tiny_config(tmp_path) -> Path:
    """A config file for a small, quick network."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("num_threads: 1\nmodel:\n  widths: [8, 16, 32]\n  latent_dim: 16\n  proj_dim: 16\n"
                   "moco:\n  bn_splits: 4\n")
    return cfg


@pytest.mark.slow
def test_cli_train_and_resume(tiny_store, tmp_path):
    cfg = _tiny_config(tmp_path)
    run = tmp_path / "run"
    res = _galmoco("train", str(tiny_store), "-o", str(run), "--config", str(cfg), "--epochs", "1",
                   "--batch-size", "32", "--device", "cpu", "--mlp", "--step-schedule",
                   "--temperature", "0.3", "--frame", "none")
    assert res.returncode == 0, res.stderr
    assert "trained 1 epochs" in res.stdout
    assert {p.name for p in run.iterdir()} == {"config.yaml", "metrics.csv", "checkpoints", "tensorboard",
                                                "provenance.json", ".lock"}
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
    assert res.returncode == 2 and "'d8' is not one of 'd4', 'o2', 'none'" in res.stderr


def _parsed(*args: str) -> dict:
    """The options as the ``train`` command receives them (parsed by click, not run)."""
    from galmoco.cli.train import train as command

    return command.make_context("train", [__file__, "-o", "run", *args]).params


def test_switches_turn_off_what_a_config_file_turns_on(tmp_path):
    from galmoco.cli.train import config_from_options

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {head: mlp}\naugment: {aug_plus: true}\namp: true\nbank: {softmax: false}\n")
    kept = config_from_options(cfg, None, _parsed())
    assert (kept.model.head, kept.augment.aug_plus, kept.amp, kept.bank.softmax) == ("mlp", True, True, False)
    off = config_from_options(cfg, None, _parsed("--no-mlp", "--no-aug-plus", "--no-amp", "--softmax"))
    assert (off.model.head, off.augment.aug_plus, off.amp, off.bank.softmax) == ("linear", False, False, True)
    on = config_from_options(None, None, _parsed("--mlp", "--checkpoint-every", "5", "--label-column", "",
                                                 "--pool", "1", "--frame", "none", "--draw-frame", "o2"))
    assert (on.model.head, on.checkpoint_every, on.label_column) == ("mlp", 5, "")
    assert (on.model.pool, on.model.frame, on.model.draw_frame) == (1, "none", "o2")
    assert config_from_options(None, None, _parsed()).model.pool == 4


def test_help_shows_the_config_defaults_and_its_choices():
    res = subprocess.run([sys.executable, "-m", "galmoco", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())  # click wraps the lines
    assert "from TrainConfig" not in text
    for shown in ("--temperature FLOAT RANGE InfoNCE temperature (0.07 v1; 0.2 v2). "
                  "[default: 0.2 in a frame, 0.1 with --frame none]",
                  "[default: neither: no head, InfoNCE on the latent itself (model.head: identity)]",
                  "[default: --cos]", "--epochs INTEGER RANGE Passes over the "
                  "training split. [default: 50]", "--arch [conv|resnet18|resnet50]",
                  "--objective [ae|moco|moco-ae|insdis|cmc]", "--norm [asinh|log10]"):
        assert shown in text, shown


@pytest.mark.slow
def test_cli_train_with_image_mixtures(tiny_store, tmp_path):
    cfg = _tiny_config(tmp_path)
    run = tmp_path / "run"
    res = _galmoco("train", str(tiny_store), "-o", str(run), "--config", str(cfg), "--epochs", "1",
                   "--batch-size", "32", "--device", "cpu", "--mix", "mixture", "--mix-global-count", "1",
                   "--mix-region-prob", "0.5", "--mix-region-decay", "0.9", "--mix-centre-sigma", "0.2")
    assert res.returncode == 0, res.stderr
    mix = yaml.safe_load((run / "config.yaml").read_text())["mix"]
    assert mix["method"] == "mixture" and mix["global_count"] == 1 and mix["global_prob"] == 0.1
    assert mix["region_prob"] == 0.5 and mix["region_pixel_decay"] == 0.9 and mix["centre_sigma"] == 0.2
    with (run / "metrics.csv").open() as fh:
        assert float(next(csv.DictReader(fh))["loss"]) > 0
    res = _galmoco("train", str(tiny_store), "-o", str(tmp_path / "ae"), "--objective", "ae",
                   "--mix", "region")
    assert res.returncode == 1
    assert "mix.method" in res.stderr and len(res.stderr.strip().splitlines()) == 1

