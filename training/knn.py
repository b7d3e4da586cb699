"""Few-label kNN accuracy, the paper's protocol (Vafaii, Galor & Yates, NeurIPS 2024, Tables 3 and 5;
docs/reproduction.md, "Geometry").

Stage in the flow: after training, on the classification features of the **test** set
(:func:`pvae.training.evaluate.encode_features`: P-VAE log rates, G/L-VAE mu, C-VAE logits). The one
implementation of the protocol: ``pvae-eval`` (:func:`pvae.training.evaluate.knn_few_label`) and the
paper study (:mod:`pvae.training.study`) both call :func:`knn_paper_protocol`; two models scored with
the same seed see the same draws, so the study compares them with
:func:`pvae.training.study.geometry.paired_comparison`.

    >>> knn = knn_paper_protocol(features, labels)              # features, labels of the 10k test set
    >>> knn["200"]["mean"], knn["200"]["ci95"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["KNN_BUDGETS", "KNN_NEIGHBORS", "KNN_POOL_SIZE", "KNN_REPEATS", "knn_paper_protocol", "t_half_width"]

#: Label budgets N of Tables 3 and 5.
KNN_BUDGETS = (200, 1000, 5000)
#: Random draws of N labelled points per budget below the pool size (the paper: 100).
KNN_REPEATS = 100
#: The first 5000 test samples are the labelled pool; the rest (the last 5000 of 10k) are scored.
KNN_POOL_SIZE = 5000
#: k of the kNN classifier (sklearn KNeighborsClassifier(n_neighbors=5), Euclidean).
KNN_NEIGHBORS = 5


def t_half_width(values: np.ndarray, confidence: float = 0.95) -> float | None:
    """Half-width of the two-sided Student-t confidence interval of the mean of ``values``; None if n < 2."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    return float(t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def _knn_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, n_neighbors: int,
) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    # Minkowski p = 2: Euclidean. Brute force is exact like sklearn's trees (they differ only in the order
    # of exactly tied distances) and 3-20x faster here: 5000 queries against a few thousand points.
    clf = KNeighborsClassifier(n_neighbors=n_neighbors, algorithm="brute")
    return float(clf.fit(x_train, y_train).score(x_eval, y_eval))


def knn_paper_protocol(
    features_test: np.ndarray, labels_test: np.ndarray, budgets: Sequence[int] = KNN_BUDGETS,
    repeats: int = KNN_REPEATS, seed: int = 0, pool_size: int = KNN_POOL_SIZE,
    pool_indices: np.ndarray | None = None, eval_indices: np.ndarray | None = None,
    n_neighbors: int = KNN_NEIGHBORS,
) -> dict[str, dict[str, Any]]:
    """Few-label kNN accuracy per label budget N (the paper's protocol, reproduction.md).

    Split: the first ``pool_size`` samples of the test set are the labelled pool, all the others the
    evaluation set (10k MNIST test images: the first 5000 / the last 5000). A small dataset (sklearn
    digits, 1797 images) passes its own split as ``pool_indices`` and ``eval_indices`` instead (both
    required together; ``pool_size`` is then ignored).

    For each N in ``budgets``: N < pool size draws N pool samples without replacement ``repeats``
    times; N == pool size uses the whole pool once; N > pool size is left out of the result. A
    KNeighborsClassifier(n_neighbors=5) (Euclidean, uniform weights, brute-force search) is fitted on the
    drawn samples and scored on the whole evaluation set. The draws for N come from a generator seeded
    with (seed, N), so they do not depend on the other budgets, and two models scored with the same seed
    see the same draws: compare them with :func:`paired_comparison` on ``accuracies``.

    Features are used in the dtype given (float32, as ``encode_features`` returns, is about twice as
    fast as float64). Cost on one thread, 10k test samples, 100 repeats of N = 200 and 1000 plus
    N = 5000 once: about 5 s for K = 100 features.

    Returns ``{str(N): {"mean", "std" (ddof 1; 0 for one draw), "ci95" (t half-width; 0 for one draw),
    "repeats", "accuracies" (in draw order)}}`` plus ``n_pool``/``n_eval`` per entry.
    """
    x = np.asarray(features_test)
    y = np.asarray(labels_test)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features (N, K) and labels (N,) must agree, got {x.shape} and {y.shape}")
    if (pool_indices is None) != (eval_indices is None):
        raise ValueError("pass pool_indices and eval_indices together")
    if pool_indices is not None and eval_indices is not None:
        pool, held = np.asarray(pool_indices), np.asarray(eval_indices)
        if np.intersect1d(pool, held).size:
            raise ValueError("pool_indices and eval_indices overlap")
    else:
        if not 0 < pool_size < len(y):
            raise ValueError(f"pool_size must be in (0, {len(y)}), got {pool_size}")
        pool, held = np.arange(pool_size), np.arange(pool_size, len(y))
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    x_eval, y_eval = x[held], y[held]
    results: dict[str, dict[str, Any]] = {}
    for n in budgets:
        if n > len(pool):
            continue
        if n < n_neighbors:
            raise ValueError(f"a budget of {n} labels is below n_neighbors = {n_neighbors}")
        if n == len(pool):
            draws = [pool]
        else:
            rng = np.random.default_rng([seed, n])
            draws = [rng.choice(pool, size=n, replace=False) for _ in range(repeats)]
        acc = np.array([_knn_accuracy(x[idx], y[idx], x_eval, y_eval, n_neighbors) for idx in draws])
        half = t_half_width(acc)
        results[str(n)] = {
            "mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
            "ci95": half if half is not None else 0.0, "repeats": int(acc.size),
            "accuracies": acc.tolist(), "n_pool": len(pool), "n_eval": len(held),
        }
    return results
