"""Lightning experiments for lamods, configured by Hydra: ``python -m experiments.run +exp=NAME``.

Layout (configs/ mirrors it)::

    run.py         entry point: a plain ``run(cfg) -> metrics`` and a thin ``@hydra.main``
    train.py       one run: build data, model, task, trainer; fit, test, write outputs
    data.py        LightningDataModules (digits, MNIST, Fashion-MNIST, synthetic)
    tasks/         LightningModules (classification)
    models.py      plain-torch reference networks
    resolvers.py   OmegaConf resolvers used by configs/ (``${mlp_sizes:...}``)
    outputs.py     what a run leaves: resolved config, metrics.json, summary line
    plots.py       PNG training curves from the CSV logs
    summary.py     the multirun summary table (a Hydra callback)
"""

from experiments.resolvers import register_resolvers

register_resolvers()
