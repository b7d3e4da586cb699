"""Shattering dimensionality: how many dichotomies of the classes a linear readout can separate.

Following the P-VAE paper (after Rigotti et al. 2013 and Bernardi et al. 2020): for every split of
the C classes into two groups of C/2, train a logistic regression on the features of one half of the
samples to tell the groups apart and score it on the other half; the shattering dimensionality is the
mean test accuracy over all splits. With 10 classes there are C(10, 5) / 2 = 126 distinct splits (a
split and its complement are the same problem).

    >>> result = shattering_dimensionality(features, labels)          # all 126 splits
    >>> result["mean"], result["ci95"], result["n_splits"]
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LOGISTIC_C", "LOGISTIC_MAX_ITER", "balanced_splits", "shattering_dimensionality"]

#: Inverse L2 strength of the logistic regressions (scikit-learn's default).
LOGISTIC_C = 1.0
#: Iteration cap of the lbfgs solver; fits that hit it are counted in the result, not warned about.
LOGISTIC_MAX_ITER = 500
#: z of a two-sided 95% normal confidence interval.
Z_95 = 1.96


def balanced_splits(classes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every split of ``classes`` into two halves, one per complementary pair: the half that holds
    ``classes[0]`` (C(10, 5) / 2 = 126 for 10 classes; odd C puts the extra class on the other side)."""
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError(f"shattering needs at least 2 classes, got {len(classes)}")
    first, rest = classes[0], classes[1:]
    half = len(classes) // 2
    return [(first, *others) for others in itertools.combinations(rest, half - 1)]


def shattering_dimensionality(
    features: np.ndarray, labels: np.ndarray, max_splits: int | None = None, max_samples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean test accuracy of logistic regressions over balanced class splits (see module docstring).

    Samples are shuffled (``seed``) and cut in two halves: train and test. Features are standardised
    with the train half's statistics. ``max_splits`` evaluates a seeded random subset of the splits (the
    same subset for every model with the same seed and classes); ``max_samples`` caps the samples used.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features (N, K) and labels (N,) must agree, got {x.shape} and {y.shape}")
    rng = np.random.default_rng(seed)
    splits = balanced_splits(sorted(int(c) for c in np.unique(y)))
    n_all = len(splits)
    if max_splits is not None and max_splits < n_all:
        chosen = np.sort(rng.choice(n_all, size=max_splits, replace=False))
        splits = [splits[i] for i in chosen]
    order = rng.permutation(len(y))
    if max_samples is not None:
        order = order[:max_samples]
    half = len(order) // 2
    train, test = order[:half], order[half:]
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (x[train] - mean) / std, (x[test] - mean) / std
    accuracies, not_converged = [], 0
    for group in splits:
        target_train, target_test = np.isin(y[train], group), np.isin(y[test], group)
        clf = LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x_train, target_train)
        not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        accuracies.append(float(clf.score(x_test, target_test)))
    acc = np.asarray(accuracies)
    ci = Z_95 * acc.std(ddof=1) / math.sqrt(len(acc)) if len(acc) > 1 else 0.0
    return {"mean": float(acc.mean()), "std": float(acc.std()), "ci95": float(ci), "n_splits": len(acc),
            "n_splits_total": n_all, "n_train": len(train), "n_test": len(test),
            "not_converged": int(not_converged), "accuracies": [float(a) for a in acc]}
