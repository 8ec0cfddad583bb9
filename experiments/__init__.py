"""Lightning experiments for lamods, configured by Hydra: ``python -m experiments.run +exp=NAME``.

Layout (configs/ mirrors it)::

    run.py         entry point: a plain ``run(cfg) -> metrics`` and a thin ``@hydra.main``
    eval.py        ``python -m experiments.eval ckpt_path=...``: test a saved checkpoint
    train.py       one training run: build data, task, trainer (the one place a Trainer is
                   made); fit, test, write the run directory
    schema.py      typed configs: a dataclass per option, checked before anything is built
    data/          LightningDataModules, one file per data source
    tasks/         LightningModules (classification, rating); ``Task.load_from_checkpoint``
    models.py      the experiments' own networks (plain-torch references, kernel heads)
    callbacks.py   last.ckpt every epoch and on interrupt, RNG states, the progress bar
    loggers.py     the CSV log, appended to when a run resumes
    sweep.py       a report's extra training runs (one helper for every report)
    reports/       analysis after training (plots, tables); no Trainer of their own
    studies/       report-only experiments: fit estimators, no training loop
    fitted.py      fit-style modules fitted on the training split before training
    resolvers.py   OmegaConf resolvers used by configs/ (``${mlp_sizes:...}``, run dirs)
    console.py     what the console shows: warnings and log lines filtered at the source
    outputs.py     what a run leaves: resolved config, metrics.json, summary line
    plots.py       PNG training curves from the CSV logs
    summary.py     the multirun summary table (a Hydra callback)
"""

from experiments.console import quiet_console
from experiments.resolvers import register_resolvers
from experiments.schema import register_schemas

quiet_console()
register_resolvers()
register_schemas()
