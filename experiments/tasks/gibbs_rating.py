r"""Rating prediction by Bayesian MF: one Gibbs sweep of :class:`lamods.recsys.GibbsSampler` per
epoch, under Lightning's manual optimisation.

The model is BPMF with the implicit feedback in the prior means ("Bayesian SVD++ flipped",
:mod:`lamods.recsys.bayes`). Epoch :math:`e` draws :math:`(x_u, y_i)^{(e)}` from the chain;
after ``burn_in`` epochs the draws are averaged into the posterior-mean prediction

.. math::
    \hat r_{ui} = \frac1S \sum_{s=1}^{S} \big(\mu + b_u^{(s)} + b_i^{(s)}
        + p_u^{(s)\top} q_i^{(s)}\big)
    = \mu + \bar b_u + \bar b_i + [p_u^{(1)} \cdots p_u^{(S)}]/S \cdot [q_i^{(1)} \cdots q_i^{(S)}],

kept as one :class:`~lamods.recsys.MatrixFactorization` with ``k * samples`` factors
(``posterior``), a registered module, so checkpoints carry it and the best one is what is
tested. During burn-in ``posterior`` holds the current draw (the curves start at epoch 1).
The chain's own state (current draw, hyperparameters, link matrices, noise precision,
generator state) rides in each checkpoint under ``"gibbs_chain"``: resuming from
``last.ckpt`` continues the chain with the draws it would have made.

``train/loss`` is the current draw's half mean squared error :math:`\tfrac1{2N}\sum(r -
\hat r^{(e)})^2` on the training ratings (the likelihood term the sampler sees); the
``{stage}/rmse`` and ``{stage}/mae`` metrics score ``posterior``, as do the ranking
metrics and ``recommendations.json`` (:class:`RatingTask`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from experiments.tasks.base import OptimizerFactory, SchedulerFactory
from experiments.tasks.rating import RatingTask
from lamods.recsys import GibbsSampler, MatrixFactorization
from lamods.recsys.train import prepare

#: checkpoint key of the chain's state
CHAIN_KEY = "gibbs_chain"


class _SweepStep(torch.optim.Optimizer):
    """An optimizer without parameters whose ``step(closure)`` only runs ``closure`` (a
    Gibbs sweep): Note [a sweep is the optimizer step]."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(0, requires_grad=True)], {})

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        return closure() if closure is not None else None


class GibbsRatingTask(RatingTask):
    """Bayesian MF by Gibbs sampling, one sweep per epoch; scores the posterior mean.

    ``net`` (a biased :class:`~lamods.recsys.MatrixFactorization` without the SVD++ term)
    gives the factors per draw, :math:`k` = ``net.n_factors``, and holds the current draw.
    The training batches are not used: the first batch of each epoch triggers one sweep
    over all the training ratings (``splits["train"]``) and scores ``train/rmse`` and
    ``train/mae`` over all of them (the posterior mean on the training ratings is kept as a
    running mean, one draw's cost per sweep). ``trainer.max_epochs`` must not exceed
    ``burn_in + samples`` (``posterior`` has room for ``samples`` draws).

    Args:
        net: the per-draw model (or its config).
        optimizer, scheduler: ignored (a sampler has no learning rate); accepted so the
            runner's configs compose.
        samples: :math:`S`, draws averaged after burn-in.
        burn_in: sweeps before the first kept draw.
        implicit: who-rated-what in the prior means (Note [implicit side features]).
        implicit_reg: :math:`\\lambda_\\beta`, the prior precision of the link matrices.
        seed: of the chain (same seed, same draws).
        k, threshold, n_recommend: as in :class:`RatingTask`.

    Examples::

        >>> task = GibbsRatingTask(MatrixFactorization(5, 7, 3), samples=4, burn_in=2)
        >>> task.posterior.n_factors
        12
    """

    def __init__(
        self,
        net: MatrixFactorization | Mapping[str, Any],
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        *,
        samples: int = 50,
        burn_in: int = 10,
        implicit: bool = True,
        implicit_reg: float = 1.0,
        seed: int = 0,
        k: int = 10,
        threshold: float = 4.0,
        n_recommend: int = 5,
    ) -> None:
        super().__init__(net, optimizer, scheduler, k=k, threshold=threshold,
                         n_recommend=n_recommend)
        name = type(self).__name__
        net_ = self.net
        if net_.user_bias is None or net_.implicit_factors is not None:
            raise ValueError(f"{name}: expected net to be a biased MatrixFactorization without "
                             f"the SVD++ term, got biased={net_.user_bias is not None}, "
                             f"implicit={net_.implicit_factors is not None}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1 \
                or isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0 \
                or not implicit_reg > 0:
            raise ValueError(f"{name}: expected samples >= 1, burn_in >= 0 (ints) and "
                             f"implicit_reg > 0, got samples={samples!r}, burn_in={burn_in!r}, "
                             f"implicit_reg={implicit_reg!r}")
        self.save_task_hyperparameters(samples=samples, burn_in=burn_in, implicit=implicit,
                                       implicit_reg=implicit_reg, seed=seed, k=k,
                                       threshold=threshold, n_recommend=n_recommend)
        self.automatic_optimization = False
        self.samples, self.burn_in = samples, burn_in
        self.implicit, self.implicit_reg, self.seed = bool(implicit), float(implicit_reg), seed
        p = net_.user_factors
        self.posterior = MatrixFactorization(
            net_.n_users, net_.n_items, net_.n_factors * samples, biased=True,
            rating_range=net_.rating_range, device=p.device, dtype=p.dtype)
        self.chain: GibbsSampler | None = None
        self._pending: dict[str, Tensor] | None = None
        self._train_mean = torch.zeros(0)

    @property
    def predictor(self) -> MatrixFactorization:
        """``posterior``: the posterior mean of the kept draws (the current draw before)."""
        return self.posterior

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Note [a sweep is the optimizer step]: Lightning counts optimizer steps as the
        # global step, which checkpointing keys on (no step, no best.ckpt); the sweep runs as
        # the closure of a parameterless optimizer's step, so each epoch counts one step.
        return _SweepStep()

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        super().setup(stage)  # mu, N(u) and the rating scale of net
        train = self._data("train")
        p = self.net.user_factors
        prepare(self.posterior, train.to(p.device), type(self).__name__)
        with torch.no_grad():
            for tensor in (self.posterior.user_factors, self.posterior.item_factors,
                           self.posterior.user_bias, self.posterior.item_bias):
                tensor.zero_()
        self.chain = GibbsSampler(train, self.net.n_factors, implicit=self.implicit,
                                  implicit_reg=self.implicit_reg, seed=self.seed,
                                  device=p.device, dtype=p.dtype, name=type(self).__name__)
        self._train_mean = torch.zeros_like(self.chain.ratings)
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def on_train_start(self) -> None:
        most = self.burn_in + self.samples
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 0 or epochs > most:
            raise ValueError(f"{type(self).__name__}: expected trainer.max_epochs <= burn_in + "
                             f"samples = {most} (one sweep per epoch), got {epochs}")

    @torch.no_grad()
    def _record(self, x_u: Tensor, x_i: Tensor) -> None:
        r"""Copy the draw into ``net``; average it into ``posterior`` (Note in the module
        docstring): with :math:`s` draws kept, the old user slots are scaled by
        :math:`(s-1)/s`, the new ones are :math:`p/s`, biases are running means."""
        k = self.net.n_factors
        p, b_u, q, b_i = x_u[:, :k], x_u[:, k], x_i[:, :k], x_i[:, k]
        net, post = self.net, self.posterior
        net.user_factors.copy_(p)
        net.item_factors.copy_(q)
        net.user_bias.copy_(b_u)
        net.item_bias.copy_(b_i)
        assert self.chain is not None
        s = max(self.chain.sweeps - self.burn_in, 1)  # draws in the average (1 in burn-in)
        old = (s - 1) / s
        post.user_factors[:, :k * (s - 1)] *= old
        post.user_factors[:, k * (s - 1):k * s] = p / s
        post.item_factors[:, k * (s - 1):k * s] = q
        post.user_bias.mul_(old).add_(b_u / s)
        post.item_bias.mul_(old).add_(b_i / s)
        # the posterior mean on the training ratings, averaged the same way (k flops a
        # rating, where scoring ``posterior`` would cost k * samples)
        users, items = self.chain.users, self.chain.items
        draw = self.chain.mu + b_u[users] + b_i[items] + (p[users] * q[items]).sum(1)
        self._train_mean.mul_(old).add_(draw / s)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        if self.chain is None:
            raise RuntimeError(f"{type(self).__name__}: the chain is built in setup('fit'); "
                               "train through a Trainer with the data module")
        if batch_idx == 0:
            opt = self.optimizers()
            opt.step(closure=lambda: self._record(*self.chain.sweep()))
            ratings = self.chain.ratings
            # 1/(2N) sum (r - r_hat)^2 of the current draw
            self.log("train/loss", 0.5 * self.chain.sse / ratings.shape[0], on_step=False,
                     on_epoch=True, prog_bar=True, batch_size=1)
            # train/rmse, train/mae over all the training ratings, from the running mean
            lo, hi = self.posterior.rating_range
            pred = self._train_mean.clamp(lo, hi).to(self.posterior.user_factors.dtype)
            target = ratings.to(pred.dtype)
            rmse, mae = self.rmse["train_rmse"], self.mae["train_mae"]
            rmse(pred, target)
            mae(pred, target)
            self.log("train/rmse", rmse, on_step=False, on_epoch=True, batch_size=len(pred))
            self.log("train/mae", mae, on_step=False, on_epoch=True, batch_size=len(pred))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.chain is not None:
            checkpoint[CHAIN_KEY] = {"chain": self.chain.state_dict(),
                                     "train_mean": self._train_mean.clone()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHAIN_KEY)
        if state is None:
            return
        if self.chain is not None:
            self._restore(state)
        else:
            self._pending = state

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.chain is not None
        self.chain.load_state_dict(state["chain"])
        self._train_mean = state["train_mean"].to(self.chain.ratings)
