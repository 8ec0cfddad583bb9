"""Scale: ALS sharded over processes (torch.distributed, gloo), planted ratings, memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from lamods.recsys import (
    MatrixFactorization,
    evaluate,
    fit_als,
    fit_als_sharded,
    fit_sgd,
    planted_ratings,
    shard_range,
)

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from lamods.recsys import MatrixFactorization, fit_als_sharded, planted_ratings
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    data = planted_ratings(37, 23, 400, 3, noise=0.1, seed=0).data
    torch.manual_seed(0)
    model = MatrixFactorization(37, 23, 3, dtype=torch.float64)
    fit_als_sharded(model, data, epochs=4, reg=0.05)
    torch.save(model.state_dict(), out)
    dist.destroy_process_group()
""")


def test_shard_ranges_cover_every_row_once() -> None:
    for n, world in ((10, 3), (5, 5), (7, 2), (3, 4)):
        ranges = [shard_range(n, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_sharded_als_in_one_process_equals_fit_als() -> None:
    data = planted_ratings(37, 23, 400, 3, noise=0.1, seed=0).data
    models = []
    for fit in (fit_als, fit_als_sharded):
        torch.manual_seed(0)
        model = MatrixFactorization(37, 23, 3, dtype=torch.float64)
        fit(model, data, epochs=4, reg=0.05)
        models.append(model)
    for (n, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=n)


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_give_the_one_process_model(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    init = f"file://{tmp_path / 'store'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", init,
                               str(tmp_path / f"rank{r}.pt")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out.decode()
    data = planted_ratings(37, 23, 400, 3, noise=0.1, seed=0).data
    torch.manual_seed(0)
    single = MatrixFactorization(37, 23, 3, dtype=torch.float64)
    fit_als(single, data, epochs=4, reg=0.05)
    for r in range(2):
        state = torch.load(tmp_path / f"rank{r}.pt")
        for n, v in single.state_dict().items():
            torch.testing.assert_close(state[n], v, rtol=1e-12, atol=1e-12, msg=f"rank {r} {n}")


def test_als_and_sgd_recover_planted_ratings_at_scale_small() -> None:
    """The 1M..25M benchmark's pipeline on 30k ratings: both solvers learn the planted rank."""
    syn = planted_ratings(1500, 800, 30_000, 4, noise=0.3, seed=1)
    train = syn.data.subset(torch.arange(27_000))
    test = syn.data.subset(torch.arange(27_000, 30_000))
    baseline = float((test.ratings - train.ratings.mean()).pow(2).mean().sqrt())   # ~1.1
    als = MatrixFactorization(1500, 800, 4)
    fit_als(als, train, epochs=10, reg=0.05)
    sgd = MatrixFactorization(1500, 800, 4)
    fit_sgd(sgd, train, epochs=12, batch_size=2048, lr=0.1, reg=0.02)
    assert evaluate(als, test)["rmse"] < 0.5 < 0.5 * baseline
    assert evaluate(sgd, test)["rmse"] < 0.55
