"""docs/concepts.md, the concept index: every topic of the curriculum and every application has
a row, and no row is dead (each module and example imports, each example has doctest lines,
each experiment's config exists and each plot is one that experiment writes).

Which plots an experiment writes is read from the code, not by running it: a training
experiment writes ``plots/curves.png`` (experiments.train), and its report or study writes the
``.png`` names that appear as string literals (not docstrings) in the module its
``_target_`` names.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import pytest
from experiment_helpers import CONFIGS, REPO
from omegaconf import OmegaConf

INDEX = REPO / "docs" / "concepts.md"

CURRICULUM = [
    "vectors, scalars and spaces", "matrices as data and transformations", "matrix arithmetic",
    "dot product and cosine similarity", "linear independence and span",
    "norms and distances", "orthogonality and projections",
    "inverses and systems of equations", "rank, nullspace and the fundamental theorem",
    "eigenvalues and eigenvectors", "singular value decomposition",
    "positive-definite matrices", "principal component analysis",
    "least squares and linear regression", "gradient descent in linear models",
    "neural networks as matrix functions", "tensors", "spectral methods (graph Laplacians)",
    "kernel methods", "random projections and fast transforms",
]
APPLICATIONS = [
    "convolution as matrix multiplication", "word embeddings and document-term matrices",
    "image compression", "recommendation", "sparse matrices and iterative methods",
    "numerical stability: conditioning, determinants vs log-determinants, log-sum-exp",
]
COLUMNS = ["#", "topic", "modules", "formula", "example", "experiment", "plot"]


def parse_index(text: str) -> list[dict[str, str]]:
    """The rows of every table whose header is :data:`COLUMNS` (``\\|`` is a literal bar)."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells == COLUMNS:
            header = cells
        elif header and not set("".join(cells)) <= set("-: "):
            assert len(cells) == len(header), f"malformed row: {line}"
            rows.append(dict(zip(header, cells)))
    return rows


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def resolve(dotted: str) -> object:
    """``lamods.a.b.c``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def png_literals(path: Path) -> set[str]:
    """``.png`` names in string literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return {node.value.rpartition("/")[2] for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.endswith(".png") and id(node) not in docstrings}


@cache
def experiment_plots(name: str) -> frozenset[str]:
    """The plot files experiment ``name`` writes (module docstring)."""
    exp = OmegaConf.load(CONFIGS / "exp" / f"{name}.yaml")
    defaults = [d if isinstance(d, str) else next(iter(d.items()))
                for d in exp.get("defaults", [])]
    plots: set[str] = set()
    kinds = dict(d for d in defaults if isinstance(d, tuple))
    if "/study" not in kinds:
        plots.add("curves.png")  # experiments.train writes plots/curves.png
    for key, group in (("/study", "study"), ("/report", "report")):
        if key in kinds:
            target = OmegaConf.load(CONFIGS / group / f"{kinds[key]}.yaml")._target_
            module = importlib.import_module(target.rpartition(".")[0])
            func = getattr(module, target.rpartition(".")[2])
            plots |= png_literals(Path(inspect.getfile(func)))
    return frozenset(plots)


ROWS = parse_index(INDEX.read_text())


def test_every_topic_has_one_row():
    topics = [row["topic"] for row in ROWS]
    assert topics == CURRICULUM + APPLICATIONS
    assert [row["#"] for row in ROWS] == [str(i) for i in range(1, 21)] + [
        f"A{i}" for i in range(1, len(APPLICATIONS) + 1)]


def test_readme_links_the_index():
    assert "(docs/concepts.md)" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("row", ROWS, ids=[row["topic"][:40] for row in ROWS])
def test_row_points_at_things_that_exist(row):
    modules = [m for m in ticked(row["modules"]) if m.startswith("lamods")]
    assert modules, "no lamods module named"
    for dotted in modules:
        resolve(dotted)
    assert row["formula"], "no formula"
    (example,) = ticked(row["example"])
    doc = inspect.getdoc(resolve(example)) or ""
    assert ">>>" in doc, f"{example} has no doctest example"
    (experiment,) = ticked(row["experiment"])
    assert (CONFIGS / "exp" / f"{experiment}.yaml").is_file(), experiment
    (plot,) = ticked(row["plot"])
    assert plot.startswith("plots/")
    assert plot.removeprefix("plots/") in experiment_plots(experiment), (
        f"{experiment} writes {sorted(experiment_plots(experiment))}, not {plot}")


def test_dead_rows_are_caught():
    """The checks above fail on a row that names what does not exist."""
    with pytest.raises((ImportError, AttributeError)):
        resolve("lamods.decomp.no_such_function")
    assert "clusters.png" in experiment_plots("clustering_digits")
    assert "curves.png" not in experiment_plots("clustering_digits")  # a study trains nothing
    assert {"curves.png", "acc_vs_params.png"} <= experiment_plots("lowrank_mnist")
    bad = parse_index("| # | topic | modules | formula | example | experiment | plot |\n"
                      "|---|---|---|---|---|---|---|\n"
                      "| 1 | t | `lamods.nope` | f \\| x \\| | `lamods.svd` | `x` | `plots/a.png` "
                      "|")
    assert bad[0]["formula"] == "f \\| x \\|"
