"""Shattering dimensionality: how many dichotomies of the classes a linear readout can separate.

Stage in the flow: after training, on the classification features of the training and the test set
(:func:`pvae.training.evaluate.encode_features`); next to the kNN protocol of :mod:`pvae.training.knn`.
:func:`pvae.training.study.geometry.paired_comparison` compares two models split by split.

The paper's protocol (after Rigotti et al. 2013 and Bernardi et al. 2020; reproduction.md,
"Shattering dimensionality"): for every split of the ten classes into two groups of five, fit a
logistic regression (scikit-learn's defaults) on the **training-set** features to tell the groups
apart and score it on the **test-set** features; the shattering dimensionality is the mean test
accuracy over the splits.

    >>> result = shattering_dimensionality(train_features, train_labels, test_features, test_labels)
    >>> result["mean"], result["ci95"], result["n_splits"]                      # 126 splits for 10 classes
    >>> paired_comparison(result_p["accuracies"], result_g["accuracies"])      # the same splits, in order
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from pvae.training.knn import t_half_width

__all__ = ["LOGISTIC_C", "LOGISTIC_MAX_ITER", "balanced_splits", "shattering_dimensionality",
           "stratified_subsample"]

#: Inverse L2 strength of the logistic regressions (scikit-learn's default, as in the paper).
LOGISTIC_C = 1.0
#: Iteration cap of the lbfgs solver (scikit-learn's default, as in the paper); fits that stop without
#: converging are counted in the result (``not_converged``), not warned about.
LOGISTIC_MAX_ITER = 100


def balanced_splits(classes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every split of ``classes`` into two halves, one per complementary pair: the half that holds
    ``classes[0]`` (C(10, 5) / 2 = 126 for 10 classes; odd C puts the extra class on the other side).

    The order is fixed: ``classes[0]`` followed by each (half - 1)-combination of the other classes in
    ``itertools.combinations`` order, e.g. (0, 1, 2, 3, 4), (0, 1, 2, 3, 5), ..., (0, 6, 7, 8, 9)."""
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError(f"shattering needs at least 2 classes, got {len(classes)}")
    first, rest = classes[0], classes[1:]
    half = len(classes) // 2
    return [(first, *others) for others in itertools.combinations(rest, half - 1)]


def stratified_subsample(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``size`` samples drawn without replacement, stratified by class.

    Class c gets floor(size * n_c / n) samples, and the remaining ones go to the classes with the
    largest fractional parts (ties: the smaller class label first); within a class the samples are a
    seeded uniform draw (``numpy.random.default_rng(seed)``, classes in sorted order).
    """
    y = np.asarray(labels)
    n = len(y)
    if not 0 < size <= n:
        raise ValueError(f"size must be in (0, {n}], got {size}")
    classes, counts = np.unique(y, return_counts=True)
    exact = size * counts / n
    quota = np.floor(exact).astype(int)
    remainder = size - int(quota.sum())
    # Largest fractional part first; a stable sort keeps the smaller class first among ties.
    quota[np.argsort(-(exact - quota), kind="stable")[:remainder]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=q, replace=False) for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def shattering_dimensionality(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray,
    max_train_samples: int | None = None, seed: int = 0, max_iter: int = LOGISTIC_MAX_ITER,
) -> dict[str, Any]:
    """Mean test accuracy of logistic regressions over all balanced class splits (the paper's protocol).

    For each split of :func:`balanced_splits` (in that order) a ``LogisticRegression(C=1.0,
    solver="lbfgs", max_iter=100)`` -- scikit-learn's defaults, with no standardisation of the features,
    as in the paper -- is fitted on the training features (target: the sample's class is in the half
    that holds the smallest class) and scored on the test features. Features are cast to float64.

    Split count: the paper lists all C(10, 5) = 252 ordered splits, each dichotomy twice (a split and
    its complement). Swapping the two labels of a logistic regression negates its weights and intercept
    and leaves the loss, the L2 penalty (the intercept is not penalised) and so the accuracy unchanged,
    so the mean over the 126 distinct dichotomies equals the mean over the 252.

    ``max_train_samples`` fits on a seeded, class-stratified subsample of the training set
    (:func:`stratified_subsample`) to fit a CPU budget; the test set is always used whole. Fits that
    stop at ``max_iter`` without converging (a ``ConvergenceWarning``, caught here) are counted in
    ``not_converged``; their accuracy is kept.

    Returns ``mean``, ``std`` (over splits, ddof 1), ``ci95`` (Student-t half-width over splits; the
    splits share their samples, so read it as spread, not as an exact interval; 0 for one split),
    ``n_splits``, ``n_train``, ``n_test``, ``not_converged``, ``accuracies`` (per split, in ``splits``
    order: compare two models on the same data with
    :func:`~pvae.training.study.geometry.paired_comparison`) and ``splits`` (each the half holding the
    smallest class, as a list of labels).

    Cost on one thread: about 2 s for 10,000 training and 10,000 test samples with K = 100 features.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = np.asarray(train_features, dtype=np.float64), np.asarray(train_labels)
    x_test, y_test = np.asarray(test_features, dtype=np.float64), np.asarray(test_labels)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"{name} features (N, K) and labels (N,) must agree, got {x.shape} and {y.shape}")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train and test features differ in width: {x_train.shape[1]} and {x_test.shape[1]}")
    classes = sorted(np.unique(y_train).tolist())
    unseen = sorted(set(np.unique(y_test).tolist()) - set(classes))
    if unseen:
        raise ValueError(f"test labels {unseen} do not occur in the training labels")
    if max_train_samples is not None and max_train_samples < len(y_train):
        if max_train_samples < len(classes):
            raise ValueError(f"max_train_samples = {max_train_samples} is below the number of classes {len(classes)}")
        keep = stratified_subsample(y_train, max_train_samples, seed)
        x_train, y_train = x_train[keep], y_train[keep]
    splits = balanced_splits(classes)
    accuracies, not_converged = [], 0
    for group in splits:
        clf = LogisticRegression(C=LOGISTIC_C, solver="lbfgs", max_iter=max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x_train, np.isin(y_train, group))
        not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        accuracies.append(float(clf.score(x_test, np.isin(y_test, group))))
    acc = np.asarray(accuracies)
    half = t_half_width(acc)
    return {"mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
            "ci95": half if half is not None else 0.0, "n_splits": len(splits), "n_train": len(y_train),
            "n_test": len(y_test), "not_converged": int(not_converged), "accuracies": acc.tolist(),
            "splits": [list(group) for group in splits]}
