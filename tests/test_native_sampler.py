"""The native Poisson sampler (pvae.native): the reference's counts bit for bit, Poisson statistics, seeds,
threads, shapes and limits, and how serving chooses between it and the bundle's sampler graph.

Bit-identity with ``poisson_reference`` (and so with ``sampler.onnx``) is the main claim; the statistical
tests are run on the native counts themselves as well, so that a shared mistake could not hide.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import poisson_chi_square

pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

from scipy import stats

from pvae import native
from pvae.bundle import SAMPLER_MAX_RATE, Bundle
from pvae.errors import BundleError, ConfigError
from pvae.export import sampler_reference as reference
from pvae.export.sampler import build_sampler_model
from pvae.native import sampler as native_sampler
from pvae.serving.engine import DevicePlan, Engine

MIN_P_VALUE = 1e-4
Z_TOLERANCE = 5.0


def _load() -> native_sampler.NativeSampler:
    try:
        return native_sampler.load()
    except native.NativeUnavailable as exc:
        if os.environ.get("CI") == "true":  # the project's setup installs a compiler: CI must have the kernel
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def kernel() -> native_sampler.NativeSampler:
    return _load()


def _rate_grid() -> np.ndarray:
    specials = [0.0, -0.0, np.nan, -1.0, -1e-3, -np.inf, np.inf, 1e-45, 1e-7, 9.999999, 10.0, 10.000001, 1e4, 1e6, 2e6]
    grid = np.concatenate([np.geomspace(1e-7, 250.0, 600), specials]).astype(np.float32)
    return np.tile(grid, (25, 1))


# ---------------------------------------------------------------------------------------------- parity
def test_the_c_constants_match_the_reference(kernel: native_sampler.NativeSampler) -> None:
    """poisson.c clamps at 1e6 and takes log k! from pvae.native, which must tabulate it as the reference does."""
    assert SAMPLER_MAX_RATE == reference.MAX_RATE == 1.0e6
    np.testing.assert_array_equal(native_sampler._LOG_FACTORIALS, reference._LOG_FACTORIALS)
    assert native_sampler._HALF_LOG_2PI == reference._HALF_LOG_2PI


def test_the_screens_exp_is_within_its_stated_error(kernel: native_sampler.NativeSampler) -> None:
    """The screen settles a count only 1e-7 (relative) away from every CDF value; that margin rests on its
    polynomial exp being within 1e-9 of exp (the module claims < 3e-10) on [-20, 0]."""
    lib = native.library()
    xs = np.concatenate([np.linspace(-20.0, 0.0, 200_001), -np.geomspace(1e-12, 20.0, 2001), [0.0, -10.0]])
    approx = np.array([lib.pvae_screen_exp(float(x)) for x in xs])
    relative = np.abs(approx / np.exp(xs) - 1.0)
    assert relative.max() < 1e-9, (relative.max(), xs[relative.argmax()])


def test_keys_match_the_reference(kernel: native_sampler.NativeSampler) -> None:
    seeds = [0, 1, -1, 2**63 - 1, -(2**63), *np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 300).tolist()]
    for seed in seeds:
        assert kernel.derive_key(seed) == reference.derive_key(seed), seed


@pytest.mark.parametrize("seed", [0, 1, -1, 2**63 - 1, -(2**63), 123456789])
def test_counts_match_the_reference_bit_for_bit(kernel: native_sampler.NativeSampler, seed: int) -> None:
    rates = _rate_grid()
    counts = kernel.sample(rates, seed)
    assert counts.dtype == np.int32 and counts.shape == rates.shape
    np.testing.assert_array_equal(counts, reference.poisson_reference(rates, seed))


def test_counts_match_the_graph_on_dense_codes(kernel: native_sampler.NativeSampler) -> None:
    """A VGA frame's worth of dense codes (log-uniform 1e-4..30, half of them spike) through sampler.onnx."""
    import onnxruntime as ort

    rates = np.exp(np.random.default_rng(5).uniform(np.log(1e-4), np.log(30.0), (1200, 512))).astype(np.float32)
    session = ort.InferenceSession(build_sampler_model().SerializeToString(), providers=["CPUExecutionProvider"])
    graph = session.run(None, {"rates": rates, "seed": np.array(9, np.int64)})[0]
    np.testing.assert_array_equal(kernel.sample(rates, 9), graph)


def _uniforms(n: int, seed: int) -> np.ndarray:
    return reference._inversion_uniform(n, reference.derive_key(seed))


def _rate_with_cdf_at(u: np.ndarray, k: int) -> np.ndarray:
    """float32 lambda with F(k; lambda) = u (bisection in float64): u then sits within float32 rounding
    (~1e-7 relative) of a CDF step, inside the screen's margin, so the exact path has to decide."""
    lo, hi = np.zeros_like(u), np.full_like(u, 10.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        above = stats.poisson.cdf(k, mid) > u  # F(k; lambda) falls as lambda grows
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return (0.5 * (lo + hi)).astype(np.float32)


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_uniforms_on_a_cdf_step_take_the_exact_path(kernel: native_sampler.NativeSampler, k: int) -> None:
    """Rates chosen so that every element's uniform lies on F(k): the screen must defer all of them, and the
    counts (k or k + 1, decided by the last bits) must still be the reference's."""
    seed, n = 77, 20_000
    u = _uniforms(n, seed)
    keep = (u > 0.02) & (u < 0.98)  # where a rate below 10 puts F(k) at u
    rates = np.where(keep, _rate_with_cdf_at(u, k), np.float32(0.5)).astype(np.float32)
    draw = kernel.draw(rates, seed)
    np.testing.assert_array_equal(draw.counts, reference.poisson_reference(rates, seed))
    on_step = keep & (rates < reference.SWITCH_RATE)
    assert set(np.unique(draw.counts[on_step])) <= {k, k + 1}
    # float32 rounding of lambda moves F(k) by up to ~lambda * 6e-8 (relative): the elements left within half
    # the screen's margin (1e-7) must all have been deferred.
    cdf = stats.poisson.cdf(k, rates.astype(np.float64))
    near = on_step & (np.abs(u - cdf) < 0.5e-7 * cdf)
    assert near.sum() > n // 4
    assert draw.exact_elements >= near.sum(), (draw.exact_elements, int(near.sum()))


def test_the_screen_settles_almost_every_element_of_dense_codes(kernel: native_sampler.NativeSampler) -> None:
    rates = np.exp(np.random.default_rng(6).uniform(np.log(1e-4), np.log(5.0), (1200, 512))).astype(np.float32)
    draw = kernel.draw(rates, 3)
    assert draw.exact_elements < 0.02 * rates.size, draw.exact_elements


@pytest.mark.parametrize("threads", [2, 3, 7, 64, 1000])
def test_threads_do_not_change_the_counts(kernel: native_sampler.NativeSampler, threads: int) -> None:
    rates = np.exp(np.random.default_rng(7).uniform(np.log(1e-6), np.log(220.0), (301, 509))).astype(np.float32)
    np.testing.assert_array_equal(kernel.sample(rates, 12, threads), kernel.sample(rates, 12, 1))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 1023, 1025])
def test_every_length_matches_the_reference(kernel: native_sampler.NativeSampler, n: int) -> None:
    """The draw-0 word is shared by elements e, e + P, e + 2P, e + 3P (P = ceil(n / 4)): short and ragged tails."""
    rates = np.geomspace(1e-3, 40.0, max(n, 1)).astype(np.float32)[:n]
    counts = kernel.sample(rates, 5)
    assert counts.shape == (n,)
    np.testing.assert_array_equal(counts, reference.poisson_reference(rates, 5))


def test_input_layouts_and_dtypes(kernel: native_sampler.NativeSampler) -> None:
    rates = np.geomspace(1e-3, 40.0, 600).reshape(20, 30)
    expected = reference.poisson_reference(rates.astype(np.float32), 8)
    np.testing.assert_array_equal(kernel.sample(rates, 8), expected)  # float64 in: converted
    transposed = np.ascontiguousarray(rates.astype(np.float32).T).T  # a Fortran-ordered view
    np.testing.assert_array_equal(kernel.sample(transposed, 8), expected)
    np.testing.assert_array_equal(kernel.sample(rates.astype(np.float32)[None], 8), expected[None])


def test_bad_arguments_are_refused(kernel: native_sampler.NativeSampler) -> None:
    rates = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="seed must fit int64"):
        kernel.sample(rates, 2**63)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        kernel.sample(rates, 1, threads=0)


def test_rates_above_the_limit_are_clamped_and_counts_not_capped(kernel: native_sampler.NativeSampler) -> None:
    rates = np.array([1e4, 1e6, 1e7, np.inf], np.float32).repeat(2000)
    counts = kernel.sample(rates, 3).astype(np.float64).reshape(4, -1)
    assert abs(counts[0].mean() - 1e4) < Z_TOLERANCE * np.sqrt(1e4 / 2000)
    for row in counts[1:]:
        assert abs(row.mean() - 1e6) < Z_TOLERANCE * np.sqrt(1e6 / 2000)


# ---------------------------------------------------------------------------------------- statistics
BIG_DRAWS = 1_000_000
BIG_RATES = [1e-3, 0.01, 0.1, 0.5, 0.99, 1.01, 3.0, 5.0, 9.99, 10.0, 10.01, 30.0, 100.0, 200.0]


@pytest.fixture(scope="module")
def big_counts(kernel: native_sampler.NativeSampler) -> np.ndarray:
    rates = np.repeat(np.array(BIG_RATES, dtype=np.float32)[:, None], BIG_DRAWS, axis=1)
    return kernel.sample(rates, 20261, threads=2)


@pytest.mark.parametrize("row", range(len(BIG_RATES)), ids=[str(r) for r in BIG_RATES])
def test_goodness_of_fit_at_a_million_draws(big_counts: np.ndarray, row: int) -> None:
    """Chi-square over bins merged until each expects >= 5, and the mean within 5 standard errors."""
    lam, counts = float(np.float32(BIG_RATES[row])), big_counts[row]
    n = counts.size
    assert abs(counts.mean() - lam) < Z_TOLERANCE * np.sqrt(lam / n)
    observed, expected, p_value = poisson_chi_square(counts, lam)
    assert p_value > MIN_P_VALUE, (lam, observed, expected)


def test_seeds_give_independent_counts(kernel: native_sampler.NativeSampler) -> None:
    rates = np.full((200, 1000), 2.0, np.float32)
    a, b = kernel.sample(rates, 1).ravel(), kernel.sample(rates, 2).ravel()
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(a, b)[0, 1]) < Z_TOLERANCE / np.sqrt(a.size)
    np.testing.assert_array_equal(kernel.sample(rates, 1).ravel(), a)


# ------------------------------------------------------------------------------------------- serving
def test_engine_samples_natively_with_the_graphs_counts(tiny_bundle: Bundle) -> None:
    _load()
    native_engine = Engine(tiny_bundle, DevicePlan("cpu"), sampler="native")
    graph_engine = Engine(tiny_bundle, DevicePlan("cpu"), sampler="graph")
    assert (native_engine.sampler_backend, graph_engine.sampler_backend) == ("native", "graph")
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 80), dtype=np.uint8)
    batch = native_engine.run_frames(frames, ("rates",))
    for index in range(2):
        np.testing.assert_array_equal(native_engine.sample(batch, index, seed=31),
                                      graph_engine.sample(batch, index, seed=31))
    rates = batch.host["rates"][1]
    np.testing.assert_array_equal(native_engine.sample_rates(rates, 4), graph_engine.sample_rates(rates, 4))


def test_engine_without_the_library(tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    engine = Engine(tiny_bundle, DevicePlan("cpu"))
    assert engine.sampler_backend == "graph" and native.ENV_SWITCH in engine.sampler_note
    with pytest.raises(ConfigError, match="--sampler native: the native kernels are switched off"):
        Engine(tiny_bundle, DevicePlan("cpu"), sampler="native")


def test_engine_refuses_a_bundle_whose_graph_draws_other_counts(tiny_bundle: Bundle,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The load-time probe: a sampler graph of another algorithm (here: one that answers zeros) is kept
    under auto, with the reason, and is an error under --sampler native."""
    _load()
    monkeypatch.setattr(Engine, "sample_rates", lambda self, rates, seed: np.zeros(np.shape(rates), np.int32))
    engine = Engine(tiny_bundle, DevicePlan("cpu"))
    assert engine.sampler_backend == "graph" and "other counts" in engine.sampler_note
    with pytest.raises(BundleError, match="use --sampler graph"):
        Engine(tiny_bundle, DevicePlan("cpu"), sampler="native")


def test_native_on_cuda_is_a_config_error(tiny_bundle: Bundle) -> None:
    with pytest.raises(ConfigError, match="on CUDA the bundle's sampler graph"):
        Engine._choose_sampler(_FakeCudaEngine(), "native")  # type: ignore[arg-type]


class _FakeCudaEngine:
    plan = DevicePlan("cuda")
