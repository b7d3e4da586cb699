"""Paired model comparisons for the paper study's geometry claims.

Stage in the flow: after training and scoring, in the study: :func:`paired_comparison` compares two
models scored on the same draws (the kNN repeats of :func:`pvae.training.knn.knn_paper_protocol`, the
paper's protocol, which lives in training because ``pvae-eval`` uses it too) or the same class splits
(:func:`pvae.training.study.shattering.shattering_dimensionality`).

    >>> knn_p, knn_g = knn_paper_protocol(f_p, labels), knn_paper_protocol(f_g, labels)   # same seed
    >>> paired_comparison(knn_p["200"]["accuracies"], knn_g["200"]["accuracies"])["ci95"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pvae.training.knn import t_half_width

__all__ = ["paired_comparison"]


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Compare two models scored on the same splits (or draws): ``a[i]`` and ``b[i]`` share split i.

    Returns ``mean_difference`` (mean of a - b), ``ci95`` (Student-t half-width of that mean; None for
    n < 2) with ``ci95_low``/``ci95_high``, ``wilcoxon_p`` (two-sided Wilcoxon signed-rank test of the
    differences, scipy's defaults: zero differences dropped; 1.0 when every difference is zero; None for
    n < 2), ``n_a_greater``, ``n_b_greater``, ``n_ties`` and ``n``.

    The splits are not independent draws from one population (every shattering split reuses the same
    samples), so read the interval and the p-value as a summary of consistency across splits rather
    than as exact error rates.
    """
    from scipy.stats import wilcoxon

    x, z = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != z.shape:
        raise ValueError(f"a and b must be 1-D and of the same length, got {x.shape} and {z.shape}")
    if x.size == 0:
        raise ValueError("nothing to compare: a and b are empty")
    d = x - z
    mean = float(d.mean())
    half = t_half_width(d)
    p: float | None
    if d.size < 2:
        p = None
    elif not d.any():
        p = 1.0
    else:
        p = float(wilcoxon(d).pvalue)
    return {
        "mean_difference": mean, "ci95": half,
        "ci95_low": None if half is None else mean - half, "ci95_high": None if half is None else mean + half,
        "wilcoxon_p": p, "n_a_greater": int((d > 0).sum()), "n_b_greater": int((d < 0).sum()),
        "n_ties": int((d == 0).sum()), "n": int(d.size),
    }
