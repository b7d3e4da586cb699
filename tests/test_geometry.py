"""The paper's geometry protocols: few-label kNN, shattering dimensionality, and the paired comparison of two
models on the same splits."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from pvae.training import knn
from pvae.training.knn import knn_paper_protocol
from pvae.training.study.geometry import paired_comparison
from pvae.training.study.shattering import balanced_splits, shattering_dimensionality, stratified_subsample


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def _clusters(n: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes, one axis each, in 10-D: well separated for small ``spread``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    return (np.eye(10)[labels] * 2 + spread * rng.normal(size=(n, 10))).astype(np.float32), labels


def test_knn_protocol_pool_first_eval_last_and_the_full_pool_once() -> None:
    x, y = _clusters(800, seed=0, spread=1.0)
    out = knn_paper_protocol(x, y, budgets=(50, 100, 400, 500), repeats=7, pool_size=400)
    assert list(out) == ["50", "100", "400"]  # 500 > pool: left out
    assert out["50"]["repeats"] == out["100"]["repeats"] == 7 and len(out["50"]["accuracies"]) == 7
    full = out["400"]
    assert full["repeats"] == 1 and full["std"] == 0.0 and full["ci95"] == 0.0
    assert (full["n_pool"], full["n_eval"]) == (400, 400)
    direct = KNeighborsClassifier(n_neighbors=5).fit(x[:400], y[:400]).score(x[400:], y[400:])
    assert full["mean"] == pytest.approx(direct)
    acc = np.array(out["100"]["accuracies"])
    assert out["100"]["mean"] == pytest.approx(acc.mean())
    assert out["100"]["std"] == pytest.approx(acc.std(ddof=1))
    assert out["100"]["ci95"] == pytest.approx(stats.t.ppf(0.975, 6) * acc.std(ddof=1) / np.sqrt(7))


def test_knn_draws_come_from_the_pool_without_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def record(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, k: int) -> float:
        seen.append((x_train[:, 0].copy(), x_eval[:, 0].copy()))
        return 0.5

    monkeypatch.setattr(knn, "_knn_accuracy", record)
    index_feature = np.arange(300, dtype=np.float64)[:, None]  # feature = sample index
    knn_paper_protocol(index_feature, np.zeros(300), budgets=(20,), repeats=5, pool_size=100)
    assert len(seen) == 5
    for train, held in seen:
        assert len(np.unique(train)) == 20 and train.max() < 100
        assert held.tolist() == list(range(100, 300))
    assert len({tuple(np.sort(t)) for t, _ in seen}) == 5  # five different draws


def test_knn_draws_are_seeded_per_budget_and_shared_between_models() -> None:
    x, y = _clusters(600, seed=1, spread=1.2)
    a = knn_paper_protocol(x, y, budgets=(30, 60), repeats=5, pool_size=300, seed=4)
    b = knn_paper_protocol(x, y, budgets=(60,), repeats=5, pool_size=300, seed=4)
    assert a["60"]["accuracies"] == b["60"]["accuracies"]  # the draws for N do not depend on other budgets
    c = knn_paper_protocol(x, y, budgets=(60,), repeats=5, pool_size=300, seed=5)
    assert a["60"]["accuracies"] != c["60"]["accuracies"]


def test_knn_separable_codes_beat_noise_and_the_comparison_says_so() -> None:
    x, y = _clusters(1000, seed=2)
    noise = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    good = knn_paper_protocol(x, y, budgets=(50,), repeats=10, pool_size=500)["50"]
    bad = knn_paper_protocol(noise, y, budgets=(50,), repeats=10, pool_size=500)["50"]
    assert good["mean"] > 0.95 and abs(bad["mean"] - 0.1) < 0.06
    cmp = paired_comparison(good["accuracies"], bad["accuracies"])
    assert cmp["ci95_low"] > 0 and cmp["n_a_greater"] == 10 and cmp["wilcoxon_p"] < 0.01


def test_knn_with_an_explicit_split_for_small_datasets() -> None:
    x, y = _clusters(1797, seed=4)  # the size of sklearn's digits
    order = np.random.default_rng(0).permutation(1797)
    pool, held = order[:898], order[898:]
    out = knn_paper_protocol(x, y, budgets=(200, 898, 1000), repeats=3, pool_indices=pool, eval_indices=held)
    assert list(out) == ["200", "898"] and out["898"]["repeats"] == 1
    assert (out["200"]["n_pool"], out["200"]["n_eval"]) == (898, 899)
    with pytest.raises(ValueError, match="together"):
        knn_paper_protocol(x, y, pool_indices=pool)
    with pytest.raises(ValueError, match="overlap"):
        knn_paper_protocol(x, y, pool_indices=pool, eval_indices=order[800:])
    with pytest.raises(ValueError, match="agree"):
        knn_paper_protocol(x, y[:10])


def test_paired_comparison_statistics() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.6, 0.8, size=126)
    a = b + 0.02 + 0.01 * rng.normal(size=126)
    out = paired_comparison(a, b)
    d = a - b
    assert out["n"] == 126 and out["mean_difference"] == pytest.approx(d.mean())
    low, high = stats.t.interval(0.95, 125, loc=d.mean(), scale=stats.sem(d))
    assert (out["ci95_low"], out["ci95_high"]) == pytest.approx((low, high))
    assert out["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d).pvalue) and out["wilcoxon_p"] < 1e-10
    assert out["n_a_greater"] + out["n_b_greater"] + out["n_ties"] == 126
    same = paired_comparison(b, b)
    assert same["mean_difference"] == 0 and same["wilcoxon_p"] == 1.0 and same["n_ties"] == 126
    one = paired_comparison([0.7], [0.5])
    assert one["ci95"] is None and one["wilcoxon_p"] is None and one["n_a_greater"] == 1
    with pytest.raises(ValueError, match="same length"):
        paired_comparison(a, b[:5])


# ----------------------------------------------------------------------------- shattering dimensionality


def test_shattering_separable_codes_score_one_noise_one_half_on_the_same_splits() -> None:
    x_train, y_train = _clusters(400, seed=5, spread=0.1)
    x_test, y_test = _clusters(400, seed=6, spread=0.1)
    rng = np.random.default_rng(7)
    good = shattering_dimensionality(x_train, y_train, x_test, y_test)
    bad = shattering_dimensionality(rng.normal(size=x_train.shape), y_train, rng.normal(size=x_test.shape), y_test)
    assert good["n_splits"] == bad["n_splits"] == len(good["accuracies"]) == 126
    assert good["splits"] == bad["splits"] == [list(s) for s in balanced_splits(range(10))]
    assert good["splits"][0] == [0, 1, 2, 3, 4] and good["splits"][-1] == [0, 6, 7, 8, 9]
    assert good["mean"] > 0.99 and abs(bad["mean"] - 0.5) < 0.05
    assert (good["n_train"], good["n_test"], good["not_converged"]) == (400, 400, 0)
    cmp = paired_comparison(good["accuracies"], bad["accuracies"])
    assert cmp["n"] == 126 and cmp["n_a_greater"] == 126 and cmp["ci95_low"] > 0.4 and cmp["wilcoxon_p"] < 1e-10


def test_a_split_and_its_complement_score_the_same() -> None:
    """Why 126 dichotomies give the paper's mean over 252 ordered splits."""
    x_train, y_train = _clusters(300, seed=8, spread=1.5)
    x_test, y_test = _clusters(300, seed=9, spread=1.5)
    for group in balanced_splits(range(10))[::25]:
        target, target_test = np.isin(y_train, group), np.isin(y_test, group)
        one = LogisticRegression().fit(x_train, target).score(x_test, target_test)
        other = LogisticRegression().fit(x_train, ~target).score(x_test, ~target_test)
        assert one == pytest.approx(other)


def test_shattering_subsample_is_seeded_and_stratified() -> None:
    rng = np.random.default_rng(10)
    labels = np.repeat(np.arange(10), [50, 100, 150, 200, 250, 300, 350, 400, 450, 500])  # 2750, unbalanced
    keep = stratified_subsample(labels, 550, seed=1)
    assert len(keep) == len(np.unique(keep)) == 550
    np.testing.assert_array_equal(np.bincount(labels[keep]), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert np.array_equal(keep, stratified_subsample(labels, 550, seed=1))
    assert not np.array_equal(keep, stratified_subsample(labels, 550, seed=2))
    odd = np.bincount(labels[stratified_subsample(labels, 101, seed=0)], minlength=10)
    assert odd.sum() == 101 and np.all(np.abs(odd - 101 * np.bincount(labels) / len(labels)) < 1)
    features = np.eye(10)[labels] + rng.normal(size=(len(labels), 10))
    a = shattering_dimensionality(features, labels, features[:300], labels[:300], max_train_samples=550, seed=1)
    b = shattering_dimensionality(features, labels, features[:300], labels[:300], max_train_samples=550, seed=1)
    c = shattering_dimensionality(features, labels, features[:300], labels[:300], max_train_samples=550, seed=2)
    assert a["accuracies"] == b["accuracies"] != c["accuracies"] and a["n_train"] == 550


def test_shattering_counts_fits_that_do_not_converge_without_warning() -> None:
    x_train, y_train = _clusters(200, seed=11, spread=2.0)
    x_test, y_test = _clusters(200, seed=12, spread=2.0)
    out = shattering_dimensionality(100 * x_train, y_train, 100 * x_test, y_test, max_iter=2)  # unscaled, 2 steps
    assert 0 < out["not_converged"] <= 126  # counted; a warning escaping would fail the test (warnings are errors)
    with pytest.raises(ValueError, match="do not occur"):
        shattering_dimensionality(x_train, y_train % 5, x_test, y_test)
