"""The rating experiments: MovieLens data module, RatingTask and GibbsRatingTask,
``+exp=mf_movielens`` (Bayesian MF, one Gibbs sweep per epoch) and ``+exp=mf_sgd_movielens``
(SGD) end to end.

Runs on a tiny MovieLens-format ``u.data`` generated in ``tmp_path`` (no network, no shared
data): low-rank ratings rounded to the 1..5 scale.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from experiment_helpers import QUIET, SigtermAfter, make_cfg

import experiments.tasks.gibbs_rating as gibbs_module
import experiments.tasks.rating as rating_module
from experiments.data import MovieLensDataModule
from experiments.run import run
from experiments.tasks.gibbs_rating import GibbsRatingTask
from experiments.tasks.rating import RECOMMENDATIONS_FILE, RatingTask
from experiments.train import build
from lamods.recsys import MatrixFactorization, fit_gibbs, rmse, synthetic_ratings

pytestmark = pytest.mark.filterwarnings("ignore:.*(LeafSpec|many workers).*")


def write_u_data(root: Path, n_users: int = 60, n_items: int = 80, seed: int = 0) -> Path:
    """A MovieLens-100K-format ``root/ml-100k/u.data``: raw ids from 1, ratings 1..5."""
    syn = synthetic_ratings(n_users, n_items, 3, density=0.4, noise=0.3, seed=seed)
    d = syn.data
    ratings = d.ratings.round().clamp(1, 5).long()
    times = torch.randperm(len(d), generator=torch.Generator().manual_seed(seed)) + 880000000
    lines = [f"{u + 1}\t{i + 1}\t{r}\t{t}\n" for u, i, r, t in
             zip(d.users.tolist(), d.items.tolist(), ratings.tolist(), times.tolist())]
    path = root / "ml-100k" / "u.data"
    path.parent.mkdir(parents=True)
    path.write_text("".join(lines))
    return path


@pytest.fixture
def data_root(tmp_path) -> Path:
    write_u_data(tmp_path / "data")
    return tmp_path / "data"


def exp(data_root: Path, *extra: str, name: str = "mf_movielens") -> list[str]:
    return [f"+exp={name}", f"data.root={data_root}", "data.download=false",
            "data.verify=false",
            "data.batch_size=256", *QUIET, *extra]


#: the Gibbs experiment, short: 2 sweeps of burn-in, 3 kept draws
SHORT_CHAIN = ["task.burn_in=2", "task.samples=3", "trainer.max_epochs=5"]


@pytest.mark.parametrize("name", ["mf_movielens", "mf_sgd_movielens"])
def test_experiment_runs_end_to_end(data_root, tmp_path, name):
    out = tmp_path / "run"
    metrics = run(make_cfg(exp(data_root, "trainer.max_epochs=4", name=name), out))
    assert metrics["name"] == name and metrics["epochs"] == 4
    for key in ("test/rmse", "test/mae", "test/precision@10", "test/recall@10",
                "test/ndcg@10", "val/rmse_best"):
        assert key in metrics, key
    assert 0 < metrics["test/mae"] <= metrics["test/rmse"] < 2.0
    assert 0 <= metrics["test/ndcg@10"] <= 1 and 0 <= metrics["test/precision@10"] <= 1
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "plots" / "curves.png").stat().st_size > 1000
    assert (out / "checkpoints" / "best.ckpt").is_file()
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/rmse", "val/rmse", "train/loss", "test/ndcg@10"} <= set(header)
    recs = json.loads((out / RECOMMENDATIONS_FILE).read_text())
    assert [r["user"] for r in recs] == [1, 2, 3, 4, 5]  # raw MovieLens ids
    for r in recs:
        items = [e["item"] for e in r["items"]]
        assert len(items) == 10 and len(set(items)) == 10
        assert all(1 <= e["predicted"] <= 5 for e in r["items"])


@pytest.mark.parametrize("name", ["mf_movielens", "mf_sgd_movielens"])
def test_training_lowers_the_error(data_root, tmp_path, name):
    short = run(make_cfg(exp(data_root, "trainer.max_epochs=1", "plots=false", name=name),
                         tmp_path / "a"))
    long = run(make_cfg(exp(data_root, "trainer.max_epochs=8", "plots=false", name=name),
                        tmp_path / "b"))
    assert long["test/rmse"] < short["test/rmse"]


def test_gibbs_experiment_is_fit_gibbs_posterior_mean(data_root, tmp_path):
    """Epoch by epoch through Lightning, the tested model is fit_gibbs's (same seed, same
    split, same draws): the posterior mean of the kept draws."""
    cfg = make_cfg(exp(data_root, *SHORT_CHAIN, "plots=false", "seed=3"), tmp_path)
    metrics = run(cfg)
    datamodule, _ = build(cfg)
    datamodule.setup()
    train, test = datamodule.splits["train"], datamodule.splits["test"]
    reference, _ = fit_gibbs(train, 10, samples=3, burn_in=2, implicit=True, implicit_reg=1.0,
                             seed=3, dtype=torch.float32)
    task = GibbsRatingTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    ours = task.posterior.predict(test.users, test.items)
    torch.testing.assert_close(ours, reference.predict(test.users, test.items),
                               rtol=1e-5, atol=1e-5)
    # the last epoch's average is the best on this data, and it is what was tested
    assert metrics["test/rmse"] == pytest.approx(float(rmse(ours, test.ratings)), abs=1e-5)


def test_gibbs_experiment_resumes_with_the_same_draws(data_root, tmp_path):
    """Stopped by SIGTERM after 3 of 5 sweeps and resumed from last.ckpt, the chain draws what
    an unstopped run draws: the same test metrics to the last digit."""
    base = exp(data_root, *SHORT_CHAIN, "plots=false")
    whole = run(make_cfg(base, tmp_path / "whole"))
    out = tmp_path / "stopped"
    sigterm = [f"+callbacks.sigterm._target_={SigtermAfter.__module__}.SigtermAfter",
               "+callbacks.sigterm.epochs=3"]
    with pytest.raises(SystemExit):
        run(make_cfg([*base, *sigterm], out))
    resumed = run(make_cfg([*base, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"], out))
    for key in ("test/rmse", "test/mae", "test/ndcg@10", "val/rmse_best", "epochs"):
        assert resumed[key] == whole[key], key


def test_gibbs_task_refuses_more_epochs_than_draws(data_root, tmp_path):
    cfg = make_cfg(exp(data_root, "task.burn_in=2", "task.samples=3", "trainer.max_epochs=6",
                       "plots=false"), tmp_path)
    with pytest.raises(ValueError, match=r"GibbsRatingTask: expected trainer.max_epochs <= "
                                         r"burn_in \+ samples = 5 \(one sweep per epoch\), "
                                         "got 6"):
        run(cfg)
    with pytest.raises(ValueError, match="GibbsRatingTask: expected samples >= 1, burn_in >= 0 "
                                         r"\(ints\) and implicit_reg > 0, got samples=0"):
        GibbsRatingTask(MatrixFactorization(5, 7, 3), samples=0)
    with pytest.raises(ValueError, match="GibbsRatingTask: expected net to be a biased "
                                         "MatrixFactorization without the SVD\\+\\+ term, "
                                         "got biased=True, implicit=True"):
        GibbsRatingTask(MatrixFactorization(5, 7, 3, implicit=True))


def test_build_sizes_the_model_from_the_data(data_root, tmp_path):
    datamodule, task = build(make_cfg(exp(data_root, "model.n_factors=7"), tmp_path))
    assert isinstance(task, RatingTask)
    net = task.net
    assert (net.n_users, net.n_items, net.n_factors) == (60, 80, 7)
    assert net.rating_range == (1.0, 5.0)


def test_rating_task_rmse_equals_recsys_rmse(data_root):
    """The logged ``val/rmse`` over several batches is lamods.recsys.rmse of all predictions."""
    dm = MovieLensDataModule(root=data_root, download=False, verify=False, batch_size=50,
                             val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    task = RatingTask(MatrixFactorization(**dm.model_kwargs(), n_factors=4), torch.optim.Adam)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    logged = trainer.validate(task, datamodule=dm, verbose=False)[0]
    val = dm.splits["val"]
    assert len(val) > 3 * dm.batch_size  # averaged over several batches
    pred = task.net.predict(val.users, val.items)
    torch.testing.assert_close(torch.tensor(logged["val/rmse"]),
                               rmse(pred, val.ratings), rtol=1e-5, atol=1e-6)
    mae = (pred - val.ratings).abs().mean()
    torch.testing.assert_close(torch.tensor(logged["val/mae"]), mae, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split", ["random", "kfold", "leave_last_out"])
def test_splits_partition_the_ratings(data_root, split):
    dm = MovieLensDataModule(root=data_root, download=False, verify=False, split=split, seed=0)
    dm.setup()
    parts = dm.splits
    total = len(dm.data)
    assert sum(dm.sizes().values()) == total
    keys = [set((parts[s].users * 1000 + parts[s].items).tolist()) for s in parts]
    assert len(set().union(*keys)) == total  # disjoint, (user, item) pairs are unique here
    if split == "kfold":
        assert abs(len(parts["test"]) - total / 5) <= 1
    if split == "leave_last_out":
        test = parts["test"]
        assert len(test) == len(torch.unique(test.users))  # one rating per user
        train = parts["train"]
        for u, t in zip(test.users.tolist()[:5], test.timestamps.tolist()[:5]):
            assert train.timestamps[train.users == u].max() <= t


def test_kfold_folds_cover_the_data(data_root):
    tests = []
    for fold in range(5):
        dm = MovieLensDataModule(root=data_root, download=False, verify=False, split="kfold",
                                 fold=fold)
        dm.setup()
        tests.append(dm.splits["test"].users * 1000 + dm.splits["test"].items)
    assert torch.cat(tests).sort().values.tolist() == sorted(
        (dm.data.users * 1000 + dm.data.items).tolist())


def test_missing_data_and_bad_options_explain(tmp_path):
    dm = MovieLensDataModule(root=tmp_path, download=False)
    with pytest.raises(RuntimeError, match="Dataset not found: use download=True"):
        dm.setup()
    with pytest.raises(ValueError, match="expected split to be one of random, kfold, "
                                         "leave_last_out, got 'temporal'"):
        MovieLensDataModule(root=tmp_path, split="temporal")
    with pytest.raises(ValueError, match=r"expected fold in \[0, 5\)"):
        MovieLensDataModule(root=tmp_path, split="kfold", fold=5)
    with pytest.raises(TypeError, match="expected net to be a lamods.recsys.MatrixFactorization"):
        RatingTask(torch.nn.Linear(2, 1), torch.optim.Adam)


@pytest.mark.parametrize("module", [rating_module, gibbs_module])
def test_rating_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
