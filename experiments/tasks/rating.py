r"""Rating prediction: a :class:`lamods.recsys.MatrixFactorization` trained by mini-batch descent.

Training minimises Surprise's per-example objective, averaged over the batch
(:meth:`MatrixFactorization.loss`):

.. math::
    \ell = \frac1{|B|}\sum_{(u,i)\in B} \tfrac12 (r_{ui} - \hat r_{ui})^2
        + \tfrac{\lambda}{2}(\|p_u\|^2 + \|q_i\|^2) + \tfrac{\lambda_b}{2}(b_u^2 + b_i^2).

Errors over a stage's ratings, from predictions clipped to the rating scale
(the training RMSE uses the batch's predictions as the epoch goes):
:math:`\mathrm{RMSE} = \sqrt{\tfrac1N\sum(\hat r - r)^2}`,
:math:`\mathrm{MAE} = \tfrac1N\sum|\hat r - r|`. After testing, the ranking metrics
precision@k, recall@k and NDCG@k (:func:`lamods.recsys.ranking_metrics`, a test rating
``>= threshold`` is relevant, training items left out) and the top-k lists of a few users
(``recommendations.json`` in the run directory).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from experiments.tasks.base import OptimizerFactory, SchedulerFactory, Task
from lamods.recsys import MatrixFactorization, Ratings, ranking_metrics
from lamods.recsys.train import prepare

RECOMMENDATIONS_FILE = "recommendations.json"


class RatingTask(Task):
    """Train a rating model on ``(users, items, ratings)`` batches.

    Logs ``train/loss``, ``{stage}/rmse`` and ``{stage}/mae`` for ``stage`` in ``train``,
    ``val``, ``test`` (epoch values over all the stage's ratings), and after testing
    ``test/precision@k``, ``test/recall@k``, ``test/ndcg@k``. The best checkpoint has the
    lowest ``val/rmse``. Before fitting, :math:`\\mu`, :math:`N(u)` and the rating scale
    are set from the training ratings and users and items without one are zeroed (they get
    the baseline prediction; no gradient ever reaches them).

    The data module must expose its training and test :class:`~lamods.recsys.Ratings` as
    ``splits["train"]`` and ``splits["test"]`` (``experiments.data.MovieLensDataModule``).

    Args:
        net: a :class:`lamods.recsys.MatrixFactorization`.
        optimizer: ``params -> Optimizer`` (a ``_partial_`` config).
        scheduler: ``optimizer -> LRScheduler`` or ``None``.
        reg: :math:`\\lambda`, L2 weight of the factors per example.
        reg_bias: :math:`\\lambda_b` (default ``reg``).
        k: length of the ranked lists for the ranking metrics and recommendations.
        threshold: a held-out rating at least this is relevant.
        n_recommend: users (the first ones by index) whose top-k lists are written.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> task = RatingTask(MatrixFactorization(5, 7, 3), torch.optim.Adam, reg=0.05)
        >>> task(torch.tensor([0, 4]), torch.tensor([6, 1])).shape
        torch.Size([2])
    """

    monitor = "val/rmse"
    monitor_mode = "min"

    def __init__(
        self,
        net: MatrixFactorization | Mapping[str, Any],
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        *,
        reg: float = 0.05,
        reg_bias: float | None = None,
        k: int = 10,
        threshold: float = 4.0,
        n_recommend: int = 5,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if not isinstance(self.net, MatrixFactorization):
            raise TypeError(f"RatingTask: expected net to be a lamods.recsys.MatrixFactorization, "
                            f"got {type(self.net).__name__}")
        if reg < 0 or (reg_bias is not None and reg_bias < 0) or k < 1 or n_recommend < 0:
            raise ValueError(f"RatingTask: expected reg, reg_bias >= 0, k >= 1, n_recommend >= 0, "
                             f"got reg={reg}, reg_bias={reg_bias}, k={k}, "
                             f"n_recommend={n_recommend}")
        self.save_task_hyperparameters(reg=reg, reg_bias=reg_bias, k=k, threshold=threshold,
                                       n_recommend=n_recommend)
        self.reg, self.reg_bias = float(reg), reg_bias
        self.k, self.threshold, self.n_recommend = int(k), float(threshold), int(n_recommend)
        # one metric object per stage so their states never mix (names avoid nn.Module.train)
        stages = ("train", "val", "test")
        self.rmse = torch.nn.ModuleDict(
            {f"{s}_rmse": MeanSquaredError(squared=False) for s in stages})
        self.mae = torch.nn.ModuleDict({f"{s}_mae": MeanAbsoluteError() for s in stages})

    @property
    def predictor(self) -> MatrixFactorization:
        """The model whose predictions are scored (val/test metrics, ranking metrics,
        recommendations): ``net`` here; a subclass may keep another (a posterior mean)."""
        return self.net

    def forward(self, user_ids: Tensor, item_ids: Tensor) -> Tensor:
        return self.predictor(user_ids, item_ids)

    def _attached_datamodule(self) -> Any:
        """The trainer's data module, or ``None`` when the task is not attached to one."""
        try:
            return self.trainer.datamodule
        except RuntimeError:
            return None

    def _data(self, split: str) -> Ratings:
        datamodule = self.trainer.datamodule
        splits = getattr(datamodule, "splits", {})
        if split not in splits:
            raise RuntimeError(f"RatingTask: expected the data module to hold its {split} "
                               f"Ratings in .splits['{split}'], got {type(datamodule).__name__} "
                               "without it")
        return splits[split]

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        train = self._data("train")
        # mu, N(u) and the rating scale from the training ratings (buffers, so checkpoints
        # carry them); users and items absent from training keep zero factors and biases
        prepare(self.net, train.to(self.net.user_factors.device))
        self.net.zero_unseen(train.users.to(self.net.user_factors.device),
                             train.items.to(self.net.user_factors.device))

    def step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        users, items, ratings = batch
        n = len(ratings)
        if stage == "train":
            loss = self.net.loss(users, items, ratings, reg=self.reg, reg_bias=self.reg_bias)
            self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                     sync_dist=True, batch_size=n)
        else:
            loss = torch.zeros((), device=ratings.device)
        self.score(batch, stage)
        return loss

    def score(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> None:
        """Update and log ``{stage}/rmse`` and ``{stage}/mae`` of :attr:`predictor` on ``batch``."""
        users, items, ratings = batch
        n = len(ratings)
        pred = self.predictor.predict(users, items)  # clipped to the rating scale, no gradient
        rmse, mae = self.rmse[f"{stage}_rmse"], self.mae[f"{stage}_mae"]
        rmse(pred, ratings)
        mae(pred, ratings)
        self.log(f"{stage}/rmse", rmse, on_step=False, on_epoch=True, prog_bar=stage != "train",
                 batch_size=n)
        self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, batch_size=n)

    def on_test_epoch_end(self) -> None:
        test = self._data("test")
        model = self.predictor
        ranking = ranking_metrics(model, test.to(model.user_factors.device), k=self.k,
                                  threshold=self.threshold)
        for name in ("precision", "recall", "ndcg"):
            key = f"{name}@{self.k}"
            self.log(f"test/{key}", ranking[key], sync_dist=True)
        if self.n_recommend and self.trainer.is_global_zero:
            self.write_recommendations(Path(self.trainer.default_root_dir) / RECOMMENDATIONS_FILE,
                                       test)

    @torch.no_grad()
    def recommendations(self, test: Ratings | None = None) -> list[dict]:
        """Top-``k`` unseen items of the first ``n_recommend`` users, raw ids where known.

        Each entry: ``{"user", "items": [{"item", "predicted", "held_out", "title"}]}``;
        ``held_out`` is the user's test rating of that item (``None`` if not in ``test``),
        ``title`` is there when the data module knows titles (ML-100K's ``u.item``).
        """
        model = self.predictor
        n_users = min(self.n_recommend, model.n_users)
        device = model.user_factors.device
        users = torch.arange(n_users, device=device)
        items, _ = model.recommend(users, min(self.k, model.n_items))
        predicted = model.predict(users.unsqueeze(1).expand_as(items), items)
        datamodule = self._attached_datamodule()
        data = getattr(datamodule, "data", None)
        user_ids = getattr(data, "user_ids", None)
        item_ids = getattr(data, "item_ids", None)
        titles_of = getattr(datamodule, "item_titles", None)
        titles = titles_of() if titles_of else {}
        held = {}
        if test is not None:
            held = {(int(u), int(i)): float(r) for u, i, r in
                    zip(test.users.tolist(), test.items.tolist(), test.ratings.tolist())}
        out = []
        for row, u in enumerate(users.tolist()):
            entries = []
            for i, score in zip(items[row].tolist(), predicted[row].tolist()):
                raw = int(item_ids[i]) if item_ids is not None else i
                entry = {"item": raw, "predicted": round(score, 4), "held_out": held.get((u, i))}
                if raw in titles:
                    entry["title"] = titles[raw]
                entries.append(entry)
            out.append({"user": int(user_ids[u]) if user_ids is not None else u,
                        "items": entries})
        return out

    def write_recommendations(self, path: Path, test: Ratings | None = None) -> Path:
        """Write :meth:`recommendations` as JSON to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.recommendations(test), indent=1) + "\n")
        return path
