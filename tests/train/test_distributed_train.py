"""``galmoco train`` under a real 2-process torchrun (gloo, CPU), resume in 1 process, and insdis/cmc."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from galmoco.config import BankConfig, MocoConfig
from galmoco.distributed import find_free_port
from galmoco.train import load_model, train

from .conftest import tiny_config, write_synthetic_store


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A 2-process moco-ae run: 64 objects of 4x16x16, 4 per rank (global batch 8), 8 steps, and a
    queue of 20 keys, which a global batch of 8 does not divide (the ring buffer's remainder case)."""
    tmp = tmp_path_factory.mktemp("ddp")
    store = write_synthetic_store(tmp / "tiny.h5", n=64, size=16)
    run_dir, dump = tmp / "run", tmp / "dump"
    dump.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-addr=127.0.0.1",
           f"--master-port={find_free_port()}", str(Path(__file__).with_name("ddp_runner.py")), str(store),
           str(run_dir), str(tmp / "cfg.yaml"), str(dump)]
    (tmp / "cfg.yaml").write_text(
        "objective: moco-ae\nepochs: 1\nbatch_size: 4\ndevice: cpu\nlabel_column: ''\nnum_threads: 1\n"
        "model: {widths: [8, 16], latent_dim: 16, proj_dim: 16}\n"
        "moco: {bn_splits: 2, momentum: 0.9, queue_size: 20}\n")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return store, run_dir, dump


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ranks_end_with_identical_queues_and_parameters(two_rank_run):
    _, run_dir, dump = two_rank_run
    r0, r1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in r0["model"].items():
        if "running_" not in key and "num_batches" not in key:  # BN statistics are each rank's own
            assert torch.equal(value, r1["model"][key]), key
    queue0, queue1 = r0["objective"]["queue.keys"], r1["objective"]["queue.keys"]
    assert torch.equal(queue0, queue1)
    # 8 steps x 8 keys = 64 keys through a queue of 20: the pointer wrapped to 64 % 20 = 4
    assert int(r0["objective"]["queue.ptr"]) == int(r1["objective"]["queue.ptr"]) == 4
    # the run dir is rank 0's: one metrics row, a checkpoint that records the world size
    rows = _metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1] and int(rows[0]["step"]) == 8
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert (ckpt["world_size"], ckpt["global_batch"]) == (2, 8)
    # the peak learning rate follows the global batch: AdamW's base 1.6e-2 x 8 / 256
    assert ckpt["scheduler"]["base_lrs"] == [pytest.approx(1.6e-2 * 8 / 256)]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_rank_checkpoint_resumes_in_one_process(two_rank_run, tmp_path):
    store, run_dir, _ = two_rank_run
    resumed = tmp_path / "run"
    (resumed / "checkpoints").mkdir(parents=True)
    for name in ("checkpoints/last.pt", "metrics.csv", "config.yaml"):
        (resumed / name).write_bytes((run_dir / name).read_bytes())
    before = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    config = tiny_config(epochs=2, num_threads=1)
    result = train(config, store, resumed, resume=True)
    assert result.epochs == 2
    # the step count is rescaled to the new global batch of 4: 2 epochs x 16 steps, as if so from the start
    assert result.steps == 2 * 64 // 4
    after = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert (after["world_size"], after["global_batch"]) == (1, 4)
    assert after["scheduler"]["base_lrs"] == [pytest.approx(1.6e-2 * 4 / 256)]
    assert after["scheduler"]["last_epoch"] == result.steps
    assert not torch.equal(after["objective"]["queue.keys"], before["objective"]["queue.keys"])
    assert [int(r["epoch"]) for r in _metrics(resumed)] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("objective, bank", [
    ("insdis", BankConfig(k=32, softmax=True, temperature=0.1)),
    ("cmc", BankConfig(k=32, softmax=False, temperature=0.1, views="gr,iz")),  # NCE with Z
])
def test_memory_bank_objectives_learn(objective, bank, tmp_path):
    store = write_synthetic_store(tmp_path / "tiny.h5", n=96, size=16)
    config = tiny_config(objective=objective, bank=bank, epochs=5, batch_size=16, label_column="",
                         moco=MocoConfig(shuffle_bn=False), channels_last=objective == "cmc")
    result = train(config, store, tmp_path / "run")
    losses = [float(r["loss"]) for r in result.metrics]
    assert losses[-1] < 0.85 * losses[0], losses
    ckpt = torch.load(result.checkpoint, weights_only=True)
    n_views = 2 if objective == "cmc" else 1
    banks = [ckpt["objective"][f"contrast.banks.{v}.memory"] for v in range(n_views)]
    assert all(b.shape[0] == 96 for b in banks)  # one entry per training image (no held-out split)
    model = load_model(result.checkpoint)
    assert model.encode(torch.randn(3, 4, 16, 16)).shape == (3, 32)  # cmc: 2 views x 16, concatenated
