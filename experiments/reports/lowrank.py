r"""The low-rank report: compress the trained network at several ranks and energies, fine-tune.

For each setting (a fixed ``rank`` in ``ranks``, or an ``energy`` in ``energies``: per
layer the smallest rank keeping that fraction of :math:`\sum_i \sigma_i^2`),
:func:`lamods.compress` replaces the trained network's ``nn.Linear`` layers by the
:class:`~lamods.LowRankLinear` of their truncated SVD where that saves parameters:

.. math::
    W = \sum_i \sigma_i u_i v_i^T \;\to\; W_r = \sum_{i \le r} \sigma_i u_i v_i^T, \qquad
    \frac{\|W - W_r\|_F}{\|W\|_F} = \sqrt{\frac{\sum_{i > r} \sigma_i^2}{\sum_i \sigma_i^2}},

:math:`m n + m` parameters of an ``nn.Linear(n, m)`` becoming :math:`r (m + n + 1) + m`.
The compressed network is tested as it is, then fine-tuned for ``finetune_epochs`` epochs
with the experiment's own task, optimizer (learning rate ``finetune_lr`` if given) and
trainer settings (best validation checkpoint), and tested again.

Target (issue 5): at least ``target_ratio`` times fewer parameters in the compressed layers
with at most ``target_drop`` (a fraction: 0.01 is one point) of test accuracy lost against
the dense network after fine-tuning.

Metrics: ``lowrank/settings``, the table (one row per setting: rank/energy, the rank per
layer, parameters in the compressed layers before/after and their ratio, parameters of the
whole model, relative weight error per layer and the largest, test accuracy compressed and
fine-tuned, the drop against the dense network and against the control, and whether the
setting meets the target), ``lowrank/dense`` (the dense network's parameters and test
accuracy, and with ``finetune_dense`` the control: the dense network fine-tuned the same
way, for what the extra epochs alone give) and ``lowrank/target`` (the target, whether
met, and the setting with the fewest model parameters that meets it). Files:
``lowrank_report.md`` (the table, then every setting's
:meth:`~lamods.layers.surgery.CompressionReport.as_markdown`), ``plots/acc_vs_params.png``,
and each fine-tune's CSV log and checkpoint in ``<run dir>/lowrank/<setting>/`` (the
control's in ``lowrank/dense/``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.plots import plt, save_figure
from experiments.train import best_checkpoint_callback, make_trainer, quiet_lightning
from lamods import compress
from lamods.layers.surgery import CompressionReport

log = logging.getLogger(__name__)

REPORT_FILE = "lowrank_report.md"
PLOT_FILE = "acc_vs_params.png"


def setting_name(rank: int | None = None, energy: float | None = None) -> str:
    """``"rank=R"`` or ``"energy=E"``: a setting's name in metrics, files and plots.

    Examples::

        >>> setting_name(rank=64), setting_name(energy=0.9)
        ('rank=64', 'energy=0.9')
    """
    return f"rank={rank}" if rank is not None else f"energy={energy:g}"


def setting_row(name: str, report: CompressionReport, dense_acc: float | None,
                acc: float | None, acc_ft: float | None, *, target_ratio: float,
                target_drop: float, control_acc: float | None = None) -> dict[str, Any]:
    """One row of the table from the compress ``report`` and the accuracies (JSON-ready).

    ``params_before`` / ``params_after`` / ``ratio`` count the replaced layers (the
    report's totals); ``model_params`` the whole compressed network. ``drop`` is
    ``dense_acc - acc_finetuned``; ``meets_target`` needs ``ratio >= target_ratio`` and
    ``drop <= target_drop`` (``None`` without test accuracies). ``drop_vs_control`` is
    ``control_acc - acc_finetuned``, against the dense network fine-tuned the same way.
    """
    replaced = report.replaced
    drop = None if dense_acc is None or acc_ft is None else dense_acc - acc_ft
    return {
        "setting": name,
        "rank": report.rank,
        "energy": report.energy,
        "ranks": {lay.name: lay.rank for lay in replaced},
        "layers_replaced": len(replaced),
        "layers_kept": len(report.layers) - len(replaced),
        "params_before": report.params_before,
        "params_after": report.params_after,
        "ratio": report.ratio,
        "model_params": report.model_params_after,
        "model_ratio": report.model_ratio,
        "rel_error": {lay.name: lay.rel_error for lay in replaced},
        "rel_error_max": max((lay.rel_error for lay in replaced), default=0.0),
        "acc_compressed": acc,
        "acc_finetuned": acc_ft,
        "drop": drop,
        "drop_vs_control": None if control_acc is None or acc_ft is None else control_acc - acc_ft,
        "meets_target": None if drop is None else bool(
            report.ratio >= target_ratio and drop <= target_drop + 1e-12),
    }


def _test_acc(trainer: pl.Trainer, task: pl.LightningModule, datamodule: pl.LightningDataModule,
              ckpt_path: str | None = None) -> float:
    results = trainer.test(task, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    return float(results[0]["test/acc"])


def evaluate_and_finetune(
    cfg: DictConfig, net: nn.Module, datamodule: pl.LightningDataModule, output_dir: Path, *,
    epochs: int, lr: float | None = None, pretest: bool = True,
) -> tuple[float | None, float | None]:
    """Test accuracy of ``net`` as it is, then after ``epochs`` epochs of fine-tuning.

    The fine-tune uses the experiment's task, optimizer (``lr`` if given) and scheduler, and
    its trainer (:func:`experiments.train.make_trainer`: best-checkpoint callback and loggers
    of the config) with ``max_epochs=epochs`` on one device; the best validation checkpoint
    is tested. It writes its CSV log and checkpoint under ``output_dir``.
    ``epochs=0`` skips it, ``pretest=False`` the first test (``None`` for either).
    """
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    assert isinstance(optimizer, dict)
    if lr is not None:
        optimizer["lr"] = lr
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") \
        else None
    options = OmegaConf.to_container(cfg.task, resolve=True)
    assert isinstance(options, dict)
    task = get_class(options.pop("_target_"))(net=net, optimizer=optimizer, scheduler=scheduler,
                                               **options)
    acc = None
    one_device = {"devices": 1, "strategy": "auto"}  # the fine-tunes are small
    if pretest:
        tester = make_trainer(cfg, output_dir, task=task, callbacks=(), logger=False, quiet=True,
                              enable_checkpointing=False, **one_device)
        acc = _test_acc(tester, task, datamodule)
    if epochs < 1:
        return acc, None
    trainer = make_trainer(cfg, output_dir, task=task, callbacks=("model_checkpoint",),
                           quiet=True, max_epochs=epochs, **one_device)
    trainer.fit(task, datamodule=datamodule)
    checkpoint = best_checkpoint_callback(trainer)
    best = "best" if checkpoint is not None and checkpoint.best_model_path else None
    return acc, _test_acc(trainer, task, datamodule, ckpt_path=best)


def _plot_acc_vs_params(dense: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                        out: Path, title: str, target_drop: float) -> Path:
    """Test accuracy against the model's parameter count: dense, compressed, fine-tuned."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n_dense, acc_dense = dense["params"], dense["acc"]
    ax.axhline(acc_dense, color="gray", lw=0.8, ls="--")
    ax.axhline(acc_dense - target_drop, color="gray", lw=0.8, ls=":",
               label=f"dense - {100 * target_drop:g} point(s)")
    ax.plot([n_dense], [acc_dense], "*", color="black", markersize=14, label="dense")
    if dense.get("acc_finetuned") is not None:
        ax.plot([n_dense], [dense["acc_finetuned"]], "*", color="tab:blue", markersize=11,
                label="dense + fine-tuned (control)")
    for kind, marker in (("rank", "o"), ("energy", "s")):
        pts = sorted((r["model_params"], r["acc_compressed"], r["acc_finetuned"], r["setting"])
                     for r in rows if r[kind] is not None)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker + "--", color="tab:orange", alpha=0.8,
                label=f"compressed ({kind})")
        if any(p[2] is not None for p in pts):
            ys = [p[2] for p in pts]
            ax.plot(xs, ys, marker + "-", color="tab:blue", label=f"+ fine-tuned ({kind})")
            for j, (x, y, (*_, name)) in enumerate(zip(xs, ys, pts)):
                # alternate above and below: neighbouring settings' labels do not overlap
                ax.annotate(name.partition("=")[2], (x, y), textcoords="offset points",
                            xytext=(0, 7 if j % 2 == 0 else -11), ha="center", fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters (whole model)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    save_figure(fig, out)
    return out


def _plain(value: Any) -> Any:
    """A config list (``ListConfig``) as a plain list, for :func:`lamods.compress`."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def write_markdown(path: Path, name: str, dense: Mapping[str, Any],
                   rows: Sequence[Mapping[str, Any]], reports: Mapping[str, CompressionReport],
                   target: Mapping[str, Any], finetune: str) -> Path:
    """``lowrank_report.md``: the table of settings, the target, every compress report."""
    control = ("" if dense["acc_finetuned"] is None else
               f" (the same fine-tune of the dense network, a control: "
               f"{dense['acc_finetuned']:.4f})")
    lines = [f"# {name}: low-rank compression", "",
             f"Dense network: {dense['params']:,} parameters, test accuracy "
             f"{_fmt(dense['acc'], '.4f')}. Fine-tune: {finetune}{control}. Drop: dense test "
             f"accuracy minus fine-tuned test accuracy.", ""]
    met = target["met"]
    verdict = ("not evaluated (no test run)" if met is None else
               f"met by `{target['setting']}` ({target['ratio']:.2f}x, "
               f"{100 * target['drop']:+.2f} points)" if met else "not met")
    lines += [f"Target: at least {target['min_ratio']:g}x fewer parameters in the compressed "
              f"layers with at most {100 * target['max_drop']:g} point(s) of test accuracy lost "
              f"after fine-tuning: **{verdict}**.", ""]
    header = ["setting", "ranks", "params (compressed layers)", "ratio", "params (model)",
              "rel. error (max)", "acc compressed", "acc fine-tuned", "drop (points)",
              "drop vs control", "target"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ranks = ", ".join(f"{k}:{v}" for k, v in r["ranks"].items()) or "-"
        drop = None if r["drop"] is None else 100 * r["drop"]
        vs = None if r["drop_vs_control"] is None else 100 * r["drop_vs_control"]
        ok = {True: "yes", False: "no", None: "-"}[r["meets_target"]]
        cells = [f"`{r['setting']}`", ranks,
                 f"{r['params_before']:,} -> {r['params_after']:,}", f"{r['ratio']:.2f}x",
                 f"{r['model_params']:,}", f"{r['rel_error_max']:.4f}",
                 _fmt(r["acc_compressed"], ".4f"), _fmt(r["acc_finetuned"], ".4f"),
                 _fmt(drop, "+.2f"), _fmt(vs, "+.2f"), ok]
        lines.append("| " + " | ".join(cells) + " |")
    for setting, report in reports.items():
        lines += ["", f"## `{setting}`", "", report.as_markdown()]
    path.write_text("\n".join(lines) + "\n")
    return path


def lowrank_report(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    task: pl.LightningModule,
    output_dir: str | Path,
    metrics: Mapping[str, Any],
    ranks: Sequence[int] = (8, 16, 32, 64),
    energies: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95),
    finetune_epochs: int = 3,
    finetune_lr: float | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_params_saved: int = 1,
    target_ratio: float = 4.0,
    target_drop: float = 0.01,
    finetune_dense: bool = True,
) -> dict[str, Any]:
    """Compress the trained ``task.net`` at each rank and energy, test, fine-tune, test.

    See the module docstring. ``include`` / ``exclude`` / ``min_params_saved`` go to
    :func:`lamods.compress`. ``finetune_dense`` also fine-tunes the dense network the same
    way, a control for what the extra epochs alone give. Without a test run
    (``cfg.test=false``) only the compression is reported. Returns the new metrics.
    """
    output_dir = Path(output_dir)
    ranks = sorted({int(r) for r in ranks or ()})
    energies = sorted({float(e) for e in energies or ()})
    if not ranks and not energies:
        raise ValueError("lowrank_report: expected at least one of report.ranks and "
                         "report.energies, got neither")
    options = {"include": _plain(include), "exclude": _plain(exclude),
               "min_params_saved": int(min_params_saved)}
    dense_net = copy.deepcopy(task.net).cpu()  # the best checkpoint's weights (train())
    n_dense = sum(p.numel() for p in dense_net.parameters())
    testing = bool(cfg.get("test", True))
    dense_acc = metrics.get("test/acc") if testing else None
    epochs = int(finetune_epochs) if testing else 0
    dense = {"params": n_dense, "acc": dense_acc, "acc_finetuned": None}
    if epochs and finetune_dense:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        with quiet_lightning():
            _, dense["acc_finetuned"] = evaluate_and_finetune(
                cfg, copy.deepcopy(dense_net), datamodule, output_dir / "lowrank" / "dense",
                epochs=epochs, lr=finetune_lr, pretest=False)
        log.info("lowrank_report: dense: %d parameters, test acc %s, fine-tuned %s", n_dense,
                 _fmt(dense_acc, ".4f"), _fmt(dense["acc_finetuned"], ".4f"))

    rows: list[dict[str, Any]] = []
    reports: dict[str, CompressionReport] = {}
    settings = [{"rank": r} for r in ranks] + [{"energy": e} for e in energies]
    for setting in settings:
        name = setting_name(**setting)
        net, report = compress(dense_net, **setting, **options)
        reports[name] = report
        acc = acc_ft = None
        if testing:
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            with quiet_lightning():
                acc, acc_ft = evaluate_and_finetune(cfg, net, datamodule,
                                                    output_dir / "lowrank" / name,
                                                    epochs=epochs, lr=finetune_lr)
        row = setting_row(name, report, dense_acc, acc, acc_ft, target_ratio=target_ratio,
                          target_drop=target_drop, control_acc=dense["acc_finetuned"])
        rows.append(row)
        log.info("lowrank_report: %s: %d -> %d parameters in %d layers (%.2fx), test acc %s, "
                 "fine-tuned %s", name, row["params_before"], row["params_after"],
                 row["layers_replaced"], row["ratio"], _fmt(acc, ".4f"), _fmt(acc_ft, ".4f"))

    meeting = sorted((r for r in rows if r["meets_target"]), key=lambda r: r["model_params"])
    best = meeting[0] if meeting else None
    target = {
        "min_ratio": float(target_ratio),
        "max_drop": float(target_drop),
        "met": None if not testing or not epochs else best is not None,
        "setting": best and best["setting"],
        "ratio": best and best["ratio"],
        "acc_finetuned": best and best["acc_finetuned"],
        "drop": best and best["drop"],
    }
    opt = OmegaConf.select(cfg, "optimizer._target_", default="?").rpartition(".")[2]
    lr = finetune_lr if finetune_lr is not None else OmegaConf.select(cfg, "optimizer.lr")
    finetune = (f"{epochs} epoch(s) of {opt} (lr {lr:g}), best validation checkpoint"
                if epochs else "none")
    write_markdown(output_dir / REPORT_FILE, cfg.name, dense, rows, reports, target, finetune)
    if cfg.get("plots", True) and testing:
        _plot_acc_vs_params(dense, rows, output_dir / "plots" / PLOT_FILE,
                            f"{cfg.name}: test accuracy against parameters", target_drop)
    return {"lowrank/target": target, "lowrank/dense": dense, "lowrank/settings": rows}
