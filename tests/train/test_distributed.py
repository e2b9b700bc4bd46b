"""galmoco.distributed: launcher detection, LR rule, and the collectives in 2 real gloo processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from galmoco import distributed as D
from galmoco.errors import GalmocoError
from tests.process_group import launch_local

WORLD = 2
PER_RANK = (6, 5)  # unequal on purpose: a short last batch on one rank


# ----------------------------------------------------------------------------- pure functions
def test_torchrun_env_wins_over_slurm():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "29400",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}
    assert D.detect_env(env) == D.DistEnv(3, 8, 1, "h0", 29400, "torchrun")


def test_srun_env_uses_first_host_and_job_port():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
           "SLURM_JOB_NODELIST": "gpu[007-010,012],cpu1", "SLURM_JOB_ID": "123456"}
    assert D.detect_env(env) == D.DistEnv(5, 8, 1, "gpu007", 15000 + 123456 % 20000, "slurm")


def test_sbatch_script_without_srun_is_one_process():
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n1", "SLURM_JOB_ID": "1"}
    assert D.detect_env(env).launcher == "single"
    assert D.detect_env({}) == D.DistEnv(0, 1, 0, None, None, "single")


@pytest.mark.parametrize("nodelist, host", [("node7", "node7"), ("a[1-3]", "a1"), ("gpu[003,5]", "gpu003"),
                                            ("x-1[09-12],y", "x-109")])
def test_first_slurm_host(nodelist, host):
    assert D.first_slurm_host(nodelist) == host


def test_malformed_env_names_the_problem():
    with pytest.raises(GalmocoError, match="malformed"):
        D.detect_env({"RANK": "zero", "WORLD_SIZE": "2"})


def test_single_process_fallbacks_are_identities():
    x = torch.randn(5, 3)
    assert D.world_size() == 1 and D.rank() == 0 and D.is_main() and not D.is_distributed()
    assert D.concat_all_gather(x) is x
    xs, idx = D.shuffle_across_ranks(x)
    assert torch.equal(D.unshuffle_across_ranks(xs, idx), x)
    ctx = D.init_distributed(device="cpu")
    assert (ctx.world_size, ctx.backend, ctx.device.type, ctx.is_main) == (1, None, "cpu", True)


# ----------------------------------------------------------------------------- 2 real processes
def _net() -> nn.Module:
    torch.manual_seed(0)  # the same weights on both ranks
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def _worker(rank: int, out: str) -> None:
    """Everything the tests below check, in one process group (one spawn for the whole module)."""
    n = PER_RANK[rank]
    offset = sum(PER_RANK[:rank])
    ids = torch.arange(offset, offset + n, dtype=torch.float32)
    torch.manual_seed(100 + rank)
    x = torch.randn(n, 2, 4, 4) + ids.view(-1, 1, 1, 1)  # row content identifies its global id
    result: dict[str, object] = {"gathered_ids": D.concat_all_gather(ids), "x": x}

    net = _net()
    net.eval()
    xs, idx = D.shuffle_across_ranks(x)
    result["eval_unshuffled"] = D.unshuffle_across_ranks(net(xs), idx)
    result["eval_global"] = net(D.concat_all_gather(x))[offset:offset + n]

    net.train()
    shuffler = D.RankBatchShuffle()
    xs, idx = shuffler.shuffle(x)
    ys = net(xs)
    result["shuffled_ids"] = (xs.mean(dim=(1, 2, 3))).round()
    result["train_unshuffled"] = shuffler.unshuffle(ys, idx)
    result["train_local"] = net(x)
    # who encoded what: every rank's shuffled inputs and train-mode outputs, to look rows up in
    result["all_shuffled_x"] = D.concat_all_gather(xs)
    result["all_shuffled_y"] = D.concat_all_gather(ys)
    del net
    torch.save(result, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    launch_local(_worker, WORLD, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.distributed
@pytest.mark.slow
def test_concat_all_gather_orders_by_rank_with_unequal_sizes(ranks):
    expected = torch.arange(sum(PER_RANK), dtype=torch.float32)
    for r in ranks:
        assert torch.equal(r["gathered_ids"], expected)


@pytest.mark.distributed
@pytest.mark.slow
def test_shuffle_bn_in_eval_mode_returns_each_ranks_own_keys(ranks):
    for r in ranks:
        torch.testing.assert_close(r["eval_unshuffled"], r["eval_global"])


@pytest.mark.distributed
@pytest.mark.slow
def test_shuffle_deals_a_permutation_that_mixes_ranks(ranks):
    dealt = torch.cat([r["shuffled_ids"] for r in ranks])
    assert sorted(dealt.tolist()) == list(range(sum(PER_RANK)))
    own = [set(range(sum(PER_RANK[:k]), sum(PER_RANK[:k + 1]))) for k in range(WORLD)]
    for k, r in enumerate(ranks):
        assert len(r["shuffled_ids"]) == PER_RANK[k]
        assert not set(r["shuffled_ids"].tolist()) <= own[k], "rank kept only its own images"


@pytest.mark.distributed
@pytest.mark.slow
def test_shuffle_bn_in_train_mode_unshuffles_to_the_right_keys(ranks):
    for r in ranks:
        all_x, all_y = r["all_shuffled_x"], r["all_shuffled_y"]
        for row, x in enumerate(r["x"]):
            where = [i for i in range(len(all_x)) if torch.equal(all_x[i], x)]
            assert len(where) == 1
            torch.testing.assert_close(r["train_unshuffled"][row], all_y[where[0]])
        # the BN statistics came from a different mix than the rank's own batch
        assert not torch.allclose(r["train_unshuffled"], r["train_local"], atol=1e-4)
