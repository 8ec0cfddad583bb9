r"""The LSA study: latent semantic analysis of the standard library's documentation.

The corpus (offline, :func:`experiments.data.stdlib_docs.load_stdlib_docs`): one document per
public standard-library module, its docstrings. Then, with :mod:`lamods.classic.text`:

1. the document-term matrix :math:`C` (sparse CSR; terms in at least ``min_df`` documents
   and at most ``max_df`` of them, English stop words removed) and its TF-IDF :math:`X`
   (:math:`\mathrm{idf}_j = \ln((1 + n)/(1 + \mathrm{df}_j)) + 1`, sublinear tf, unit rows);
2. the rank-``k`` truncated SVD :math:`X \approx U_k S_k V_k^T` by
   :func:`lamods.randomized_svd` on the sparse matrix (never densified); checked against
   the exact singular values of the dense :math:`X` (``lsa/max_sv_rel_error``);
3. the top terms of each latent dimension (the largest and the most negative entries of
   each row of :math:`V_k^T`);
4. each query folded in, :math:`\hat q = q V_k` (its TF-IDF with the corpus' idf), and its
   nearest modules by cosine similarity in the latent space, beside the nearest by cosine
   similarity of the raw TF-IDF vectors.

Metrics: ``lsa/n_docs``, ``lsa/n_terms``, ``lsa/density`` (stored entries / all),
``lsa/k``, ``lsa/singular_values``, ``lsa/energy`` (:math:`\sum_{i \le k} s_i^2 / \|X\|_F^2`),
``lsa/max_sv_rel_error``, ``lsa/topics`` (per dimension: top positive and negative terms),
``lsa/queries`` (per query: the nearest modules in the latent space and by raw TF-IDF),
``time/svd_s``. Files: ``lsa_topics.md`` (the same as text), ``plots/singular_values.png``
(the decay of all singular values of :math:`X`, the randomized ones marked, and the
cumulative energy) and ``plots/documents.png`` (the modules on the first two latent
dimensions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from experiments.data.stdlib_docs import load_stdlib_docs
from experiments.plots import plt, save_figure
from lamods.classic import build_vocabulary, cosine_search, count_matrix, lsa, tfidf

log = logging.getLogger(__name__)

#: the metrics the run's one-line summary shows
HEADLINE = ("lsa/n_docs", "lsa/n_terms", "lsa/energy", "lsa/max_sv_rel_error")
REPORT_FILE = "lsa_topics.md"


def top_terms(components: torch.Tensor, terms: Sequence[str], n: int) -> list[dict[str, Any]]:
    """Per latent dimension (row of :math:`V_k^T`): the ``n`` terms of largest weight and
    the ``n`` of most negative weight (only terms of negative weight).

    Examples::

        >>> V = torch.tensor([[0.9, -0.1, 0.3], [0.0, 0.8, 0.5]])
        >>> top_terms(V, ["svd", "loss", "rank"], 1)
        [{'dim': 1, 'positive': ['svd'], 'negative': ['loss']}, \
{'dim': 2, 'positive': ['loss'], 'negative': []}]
    """
    out = []
    for i, row in enumerate(components):
        order = torch.argsort(row, descending=True).tolist()
        out.append({"dim": i + 1, "positive": [terms[j] for j in order[:n]],
                    "negative": [terms[j] for j in order[::-1][:n] if float(row[j]) < 0]})
    return out


def _plot_spectrum(exact: np.ndarray, approx: np.ndarray, total: float, out: Path,
                   title: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4))
    idx = np.arange(1, len(exact) + 1)
    left.semilogy(idx, exact, color="tab:blue", label="all singular values (dense SVD)")
    left.semilogy(np.arange(1, len(approx) + 1), approx, "o", ms=3, color="tab:red",
                  label=f"randomized SVD of the sparse matrix (k={len(approx)})")
    left.set_xlabel("index i")
    left.set_ylabel("singular value s_i")
    left.legend()
    right.plot(idx, np.cumsum(exact ** 2) / total, color="tab:green")
    right.axvline(len(approx), color="tab:red", ls="--", label=f"k = {len(approx)}")
    right.set_xlabel("rank k")
    right.set_ylabel("energy kept, sum_{i<=k} s_i^2 / ||X||_F^2")
    right.set_ylim(0, 1.02)
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, out)


def _plot_documents(vectors: np.ndarray, names: Sequence[str], out: Path, title: str,
                    n_labels: int = 25) -> None:
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.scatter(vectors[:, 0], vectors[:, 1], s=10, alpha=0.6)
    # label the modules farthest from the origin (the ones the two dimensions describe)
    far = np.argsort(-np.hypot(vectors[:, 0], vectors[:, 1]))[:n_labels]
    for i in far:
        ax.annotate(names[i], vectors[i, :2], fontsize=7, alpha=0.8)
    ax.set_xlabel("latent dimension 1 (U S)")
    ax.set_ylabel("latent dimension 2 (U S)")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    save_figure(fig, out)


def lsa_study(
    *,
    cfg: DictConfig,
    datamodule: Any,
    output_dir: str | Path,
    k: int = 50,
    max_docs: int | None = None,
    min_chars: int = 200,
    min_df: int = 2,
    max_df: float = 0.5,
    n_iter: int = 6,
    oversamples: int = 10,
    n_topics: int = 8,
    n_terms: int = 8,
    queries: Sequence[str] = (),
    n_nearest: int = 5,
) -> dict[str, Any]:
    """LSA of the standard library's documentation (see the module docstring)."""
    names, docs = load_stdlib_docs(max_docs=max_docs, min_chars=min_chars)
    terms = build_vocabulary(docs, min_df=min_df, max_df=max_df, stop_words=ENGLISH_STOP_WORDS)
    X, idf = tfidf(count_matrix(docs, terms), sublinear_tf=True)
    n, d = X.shape
    nnz = int(X.values().numel())
    log.info("lsa: %d modules, %d terms, %d stored entries (%.2f%% of the matrix)", n, d, nnz,
             100 * nnz / (n * d))
    k = min(int(k), n, d)
    start = time.perf_counter()
    res = lsa(X, k, n_iter=n_iter, oversamples=oversamples,
              generator=torch.Generator().manual_seed(int(cfg.seed)))
    seconds = time.perf_counter() - start
    # the exact spectrum, for the check and the plot (the dense copy is small here)
    exact = torch.linalg.svdvals(X.to_dense())
    total = float(exact.square().sum())
    sv_error = float(((res.singular_values - exact[:k]).abs() / exact[:k]).max())
    energy = float(res.singular_values.square().sum()) / total
    log.info("lsa: rank-%d randomized SVD of the sparse TF-IDF matrix in %.3f s: %.1f%% of "
             "the energy, singular values within %.2g of the exact ones", k, seconds,
             100 * energy, sv_error)
    topics = top_terms(res.components[:n_topics], terms, n_terms)
    lines = [f"# {cfg.name}: LSA of {n} standard-library modules ({d} terms, k={k})", "",
             "## Top terms of each latent dimension", ""]
    for t in topics:
        lines.append(f"- dim {t['dim']}: + {', '.join(t['positive'])} | "
                     f"- {', '.join(t['negative']) or '(none)'}")
        log.info("lsa: dim %d: + %s | - %s", t["dim"], ", ".join(t["positive"]),
                 ", ".join(t["negative"]) or "(none)")
    found: dict[str, Any] = {}
    if queries:
        Xq, _ = tfidf(count_matrix(list(queries), terms), idf=idf, sublinear_tf=True)
        # fold in: q_hat = q V_k (sparse x dense); raw: cosine of the TF-IDF rows themselves
        latent = Xq @ res.components.mT
        top = min(n_nearest, n)
        _, near = cosine_search(latent, res.doc_vectors, top)
        raw_scores = (X @ Xq.to_dense().mT).mT  # unit rows: cosines
        raw = torch.argsort(raw_scores, dim=1, descending=True)[:, :top]
        lines += ["", "## Nearest modules of each query", ""]
        for i, q in enumerate(queries):
            found[q] = {"lsa": [names[j] for j in near[i].tolist()],
                        "tfidf": [names[j] for j in raw[i].tolist()
                                  if float(raw_scores[i, j]) > 0]}
            lines.append(f"- \"{q}\": LSA {', '.join(found[q]['lsa'])}; raw TF-IDF "
                         f"{', '.join(found[q]['tfidf']) or '(no shared term)'}")
            log.info("lsa: %r -> %s (raw TF-IDF: %s)", q, ", ".join(found[q]["lsa"]),
                     ", ".join(found[q]["tfidf"]) or "no shared term")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).write_text("\n".join(lines) + "\n")
    if cfg.get("plots", True):
        _plot_spectrum(exact.numpy(), res.singular_values.numpy(), total,
                       out_dir / "plots" / "singular_values.png",
                       f"{cfg.name}: singular values of the {n} x {d} TF-IDF matrix")
        _plot_documents(res.doc_vectors[:, :2].numpy(), names, out_dir / "plots" / "documents.png",
                        f"{cfg.name}: standard-library modules on the first two LSA dimensions")
    return {"lsa/n_docs": n, "lsa/n_terms": d, "lsa/density": nnz / (n * d), "lsa/k": k,
            "lsa/singular_values": res.singular_values.tolist(), "lsa/energy": energy,
            "lsa/max_sv_rel_error": sv_error, "lsa/topics": topics, "lsa/queries": found,
            "time/svd_s": round(seconds, 4)}
