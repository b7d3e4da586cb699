"""The exported Poisson sampler: graph == numpy reference, Poisson statistics, seeding, shapes, limits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import poisson_chi_square
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")  # the [cpu] or [gpu] extra
pytest.importorskip("scipy")

import onnxruntime as ort
from scipy import stats

from pvae.export.sampler import (
    COUNTS_OUTPUT,
    DEFAULT_OPSET,
    DERIVATION_KEY_A,
    DERIVATION_KEY_B,
    MAX_RATE,
    RATES_INPUT,
    SEED_INPUT,
    append_sampler,
    build_sampler_model,
    derive_key,
    is_admissible_key,
    loop_trip_counts,
    poisson_reference,
    squares32,
)

Z_TOLERANCE = 5.0  # tolerances are 5 standard errors
MIN_P_VALUE = 1e-4  # goodness-of-fit threshold (fixed seeds: the test is deterministic)
SAMPLES = 200_000  # samples per rate in the statistical tests

# A linear P-VAE rate path with random weights, to append the sampler to: x (N, 256) @ W (256, K), then
# log dr = sc_10(u), log lambda = sc_5.3(log r + log dr), lambda = exp(log lambda) + 1.19e-7, where
# sc_c(v) = c - softplus(c - v) is the model's soft upper clamp.
PATCH_PIXELS = 256  # D: a 16x16 patch
RATE_EPSILON = 1.19e-7  # added to exp(log lambda) so that no rate is exactly 0
MODULATION_CLAMP = 10.0  # log dr = sc_10(u)
RATE_CLAMP = 5.3  # log lambda = sc_5.3(...)
LOG_PRIOR_RANGE = (-6.0, -4.0)  # log r init for linear decoders
ENCODER_INIT_STD = 0.05  # N(0, 0.05^2) init of the linear encoder
# Synthetic sparse codes: lognormal rates with median 0.02 and sigma of log 1.5 (mean 0.062, 0.45 % of
# rates > 1), clipped at 50.
REALISTIC_MEDIAN = 0.02
REALISTIC_LOG_STD = 1.5
REALISTIC_MAX = 50.0


def build_rate_path_model(latents: int = 512, seed: int = 0) -> onnx.ModelProto:
    """x float32 (N, 256) -> rates float32 (N, latents): a linear P-VAE encoder with random weights."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((PATCH_PIXELS, latents)) * ENCODER_INIT_STD).astype(np.float32)
    log_prior = rng.uniform(*LOG_PRIOR_RANGE, latents).astype(np.float32)

    def const(name: str, value: float | np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["u"]),  # (N, K) encoder output
        helper.make_node("Sub", ["c10", "u"], ["m1"]),  # sc_10(u) = 10 - softplus(10 - u)
        helper.make_node("Softplus", ["m1"], ["m2"]),
        helper.make_node("Sub", ["c10", "m2"], ["log_modulation"]),
        helper.make_node("Add", ["log_prior", "log_modulation"], ["l0"]),
        helper.make_node("Sub", ["c53", "l0"], ["l1"]),  # sc_5.3(l0)
        helper.make_node("Softplus", ["l1"], ["l2"]),
        helper.make_node("Sub", ["c53", "l2"], ["log_rate"]),
        helper.make_node("Exp", ["log_rate"], ["e"]),
        helper.make_node("Add", ["e", "eps"], [RATES_INPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "rate_path",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", PATCH_PIXELS])],
        [helper.make_tensor_value_info(RATES_INPUT, TensorProto.FLOAT, ["N", latents])],
        [
            numpy_helper.from_array(weight, "weight"),
            const("log_prior", log_prior),
            const("c10", MODULATION_CLAMP),
            const("c53", RATE_CLAMP),
            const("eps", RATE_EPSILON),
        ],
    )
    opsets = [helper.make_opsetid("", DEFAULT_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tests.test_sampler_onnx")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model)
    return model


def realistic_rates(patches: int, latents: int, seed: int = 0) -> np.ndarray:
    """Synthetic sparse codes: lognormal(median 0.02, sigma of log 1.5), clipped to [1.19e-7, 50]."""
    rng = np.random.default_rng(seed)
    log_rates = np.log(REALISTIC_MEDIAN) + REALISTIC_LOG_STD * rng.standard_normal((patches, latents))
    return np.clip(np.exp(log_rates), RATE_EPSILON, REALISTIC_MAX).astype(np.float32)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def sampler() -> ort.InferenceSession:
    return _session(build_sampler_model())


def _sample(session: ort.InferenceSession, rates: np.ndarray, seed: int) -> np.ndarray:
    feeds = {RATES_INPUT: np.asarray(rates, dtype=np.float32), SEED_INPUT: np.array(seed, dtype=np.int64)}
    return session.run([COUNTS_OUTPUT], feeds)[0]


def _rate_grid() -> np.ndarray:
    specials = [0.0, -0.0, np.nan, -1.0, -1e-3, -np.inf, np.inf, 1e-45, 1e-7, 9.999999, 10.0, 10.000001, 1e4, 1e6, 2e6]
    grid = np.concatenate([np.geomspace(1e-7, 250.0, 600), specials]).astype(np.float32)
    return np.tile(grid, (25, 1))  # (25, 615)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("seed", [0, 1, -1, 2**63 - 1, -(2**63), 123456789])
def test_graph_matches_reference_bit_for_bit(sampler: ort.InferenceSession, seed: int) -> None:
    rates = _rate_grid()
    counts = _sample(sampler, rates, seed)
    assert counts.dtype == np.int32 and counts.shape == rates.shape
    np.testing.assert_array_equal(counts, poisson_reference(rates, seed))


def test_graph_matches_reference_on_realistic_rates(sampler: ort.InferenceSession) -> None:
    rates = realistic_rates(1200, 512, seed=3)
    np.testing.assert_array_equal(_sample(sampler, rates, 42), poisson_reference(rates, 42))


@pytest.mark.parametrize("seed", [3, -11])
def test_graph_matches_reference_where_the_dense_screen_decides(sampler: ort.InferenceSession, seed: int) -> None:
    """Rates whose c_0 = exp(-lambda) edges sit on the byte bins j/256 (the screen's margins), dense rates
    below and above SWITCH_RATE, and NaN/negative rates among them."""
    rng = np.random.default_rng(abs(seed))
    edges = -np.log1p(-np.arange(1, 256) / 256.0)  # 1 - exp(-lambda) = j / 256
    dense = rng.uniform(0.0, 12.0, 200 * 512)
    dense[rng.random(dense.size) < 0.02] = np.nan
    dense[rng.random(dense.size) < 0.02] = -1.0
    rates = np.concatenate([np.tile(edges, 512), dense]).astype(np.float32).reshape(-1, 512)
    np.testing.assert_array_equal(_sample(sampler, rates, seed), poisson_reference(rates, seed))


@pytest.mark.parametrize(
    "options", [{"shift": "bitshift"}, {"inversion_block": 1}, {"inversion_block": 7}, {"opset": 21}]
)
def test_build_options_give_the_same_counts(sampler: ort.InferenceSession, options: dict[str, object]) -> None:
    rates = _rate_grid()
    other = _session(build_sampler_model(**options))
    np.testing.assert_array_equal(_sample(other, rates, 5), _sample(sampler, rates, 5))


# ---------------------------------------------------------------------------------------- statistics
def _counts_per_rate(sampler: ort.InferenceSession, rates: list[float], draws: int, seed: int) -> np.ndarray:
    """(len(rates), draws) counts, one row per rate (as float32), from one run."""
    return _sample(sampler, np.repeat(np.array(rates, dtype=np.float32)[:, None], draws, axis=1), seed)


STAT_RATES = [1e-3, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 9.9, 10.0, 10.1, 20.0, 50.0, 100.0, 150.0, 200.0]


@pytest.fixture(scope="module")
def stat_counts(sampler: ort.InferenceSession) -> np.ndarray:
    """(len(STAT_RATES), SAMPLES) counts, one row per rate, from one run."""
    return _counts_per_rate(sampler, STAT_RATES, SAMPLES, 2024)


@pytest.mark.parametrize("row", range(len(STAT_RATES)), ids=[str(r) for r in STAT_RATES])
def test_mean_and_variance_match_the_rate(stat_counts: np.ndarray, row: int) -> None:
    lam, counts = float(np.float32(STAT_RATES[row])), stat_counts[row].astype(np.float64)
    n = counts.size
    mean_se = np.sqrt(lam / n)
    var_se = np.sqrt((lam + 2.0 * lam**2) / n)  # Var(s^2) ~ (mu4 - sigma^4)/n, mu4 = lam + 3 lam^2
    assert abs(counts.mean() - lam) < Z_TOLERANCE * mean_se
    assert abs(counts.var(ddof=1) - lam) < Z_TOLERANCE * var_se


@pytest.mark.parametrize("row", [0, 2, 4, 7, 8, 9, 11, 13, 14], ids=lambda r: str(STAT_RATES[r]))
def test_chi_square_goodness_of_fit(stat_counts: np.ndarray, row: int) -> None:
    lam, counts = float(np.float32(STAT_RATES[row])), stat_counts[row]
    observed, expected, p_value = poisson_chi_square(counts, lam)
    assert len(observed) >= 2
    assert p_value > MIN_P_VALUE, (lam, observed, expected)


def test_randomised_pit_is_uniform_across_rates(sampler: ort.InferenceSession) -> None:
    """F(X - 1) + V p(X), V ~ U(0, 1), is U(0, 1) iff X ~ Poisson(lambda); rates log-uniform in [1e-3, 200]."""
    rng = np.random.default_rng(17)
    n = 300_000
    rates = np.exp(rng.uniform(np.log(1e-3), np.log(200.0), n)).astype(np.float32)
    counts = _sample(sampler, rates.reshape(300, -1), 31).ravel()
    lam = rates.astype(np.float64)
    pit = stats.poisson.cdf(counts - 1, lam) + rng.uniform(size=n) * stats.poisson.pmf(counts, lam)
    assert stats.kstest(pit, "uniform").pvalue > MIN_P_VALUE


def test_tiny_rates_follow_one_minus_exp(sampler: ort.InferenceSession) -> None:
    """P(count >= 1) = 1 - exp(-lambda) for lambda = 1e-5 (binomial 5-sigma band over 2M elements)."""
    lam, n = 1e-5, 2_000_000
    spikes = int(np.sum(_sample(sampler, np.full((n // 1000, 1000), lam, np.float32), 99) > 0))
    p = -np.expm1(-np.float64(np.float32(lam)))
    assert abs(spikes - n * p) < Z_TOLERANCE * np.sqrt(n * p * (1 - p))


# Goodness of fit at 10**6 draws per rate from 1e-7 to 200, on both sides of every switch: the
# inversion/PTRS switch at SWITCH_RATE = 10; the byte A's bins (the dense screen leaves an element to
# the exact path when a CDF value lies within its bin, so A = 0 always, around 1/256; and its count is
# decided from A alone only below 4); the inversion Loop's blocks of DEFAULT_INVERSION_BLOCK = 4 steps (counts 4/5
# and 8/9 around rates 5 and 9); and the model's clamp at e**5.3 ~ 200.
BIG_DRAWS = 1_000_000
BIG_RATES = [
    1e-5, 1e-3, 0.0035, 0.0043, 0.1, 0.99, 1.01, 3.0, 5.0, 9.99, 9.999999, 10.0, 10.01, 30.0, 100.0, 200.0
]
TINY_RATES = [1e-7, 1e-6]  # too few spikes for bins: the total count is tested (Poisson(n lambda))
TINY_DRAWS = 20_000_000


@pytest.fixture(scope="module")
def big_counts(sampler: ort.InferenceSession) -> np.ndarray:
    """(len(BIG_RATES), BIG_DRAWS) counts, one row per rate, from one run."""
    return _counts_per_rate(sampler, BIG_RATES, BIG_DRAWS, 20260)


@pytest.mark.parametrize("row", range(len(BIG_RATES)), ids=[str(r) for r in BIG_RATES])
def test_goodness_of_fit_at_a_million_draws(big_counts: np.ndarray, row: int) -> None:
    """Chi-square over merged bins (each expecting >= 5) and the mean within 5 standard errors."""
    lam, counts = float(np.float32(BIG_RATES[row])), big_counts[row]
    n = counts.size
    assert abs(counts.mean() - lam) < Z_TOLERANCE * np.sqrt(lam / n)
    observed, expected, p_value = poisson_chi_square(counts, lam)
    assert len(observed) >= 2
    assert p_value > MIN_P_VALUE, (lam, observed, expected)


@pytest.mark.parametrize("lam", TINY_RATES)
def test_tiny_rates_total_count(sampler: ort.InferenceSession, lam: float) -> None:
    """The total count over 2e7 draws is Poisson(n lambda): two-sided p-value above MIN_P_VALUE."""
    rates = np.full((TINY_DRAWS // 1000, 1000), lam, np.float32)
    total = int(_sample(sampler, rates, 4242).sum(dtype=np.int64))
    mean = TINY_DRAWS * float(np.float32(lam))
    p_value = 2.0 * min(stats.poisson.cdf(total, mean), stats.poisson.sf(total - 1, mean))
    assert p_value > MIN_P_VALUE, (lam, total, mean)


# --------------------------------------------------------------------------------------------- seeds
def test_same_seed_gives_the_same_counts(sampler: ort.InferenceSession) -> None:
    rates = realistic_rates(64, 512, seed=1) * 20.0
    first = _sample(sampler, rates, 77)
    np.testing.assert_array_equal(first, _sample(sampler, rates, 77))
    np.testing.assert_array_equal(first, _sample(_session(build_sampler_model()), rates, 77))


@pytest.mark.parametrize(("seed_a", "seed_b"), [(0, 1), (1, 2), (5, 5 + 2**32), (7, -7), (3, 3 + 2**62)])
@pytest.mark.parametrize("rate", [2.0, 0.05, 50.0])
def test_different_seeds_give_independent_counts(
    sampler: ort.InferenceSession, seed_a: int, seed_b: int, rate: float
) -> None:
    n = 200_000
    rates = np.full((200, n // 200), rate, np.float32)
    a = _sample(sampler, rates, seed_a).ravel().astype(np.float64)
    b = _sample(sampler, rates, seed_b).ravel().astype(np.float64)
    pmf = stats.poisson.pmf(np.arange(1000), rate)
    p_equal = float(np.sum(pmf**2))  # P(X == Y) for independent X, Y ~ Poisson(rate)
    assert abs(np.mean(a == b) - p_equal) < Z_TOLERANCE * np.sqrt(p_equal * (1 - p_equal) / n)
    assert abs(np.corrcoef(a, b)[0, 1]) < Z_TOLERANCE / np.sqrt(n)


@pytest.mark.parametrize("rate", [2.0, 0.3, 200.0])
def test_neighbouring_elements_are_uncorrelated(sampler: ort.InferenceSession, rate: float) -> None:
    rows, cols = 400, 500
    counts = _sample(sampler, np.full((rows, cols), rate, np.float32), 11).ravel().astype(np.float64)
    n = counts.size
    words = (n + 3) // 4  # elements e, e + P, e + 2P, e + 3P share one draw-0 word (different bytes)
    for lag in (1, 2, cols, words, 2 * words):
        r = np.corrcoef(counts[:-lag], counts[lag:])[0, 1]
        assert abs(r) < Z_TOLERANCE / np.sqrt(n - lag), (lag, r)


# ------------------------------------------------------------------------------------ shapes, limits
@pytest.mark.parametrize("shape", [(0, 512), (5, 0), (1, 0), (0, 0), (0, 1)])
def test_zero_size_rates_give_zero_size_counts(sampler: ort.InferenceSession, shape: tuple[int, ...]) -> None:
    """Every zero-size (N, K) shape, a zero in either position, comes back as int32 zeros of that
    shape, as the numpy reference returns (the final Reshape keeps literal zeros: allowzero)."""
    rates = np.zeros(shape, np.float32)
    counts = _sample(sampler, rates, 1)
    assert counts.shape == shape and counts.dtype == np.int32
    reference = poisson_reference(rates, 1)
    assert reference.shape == shape


def test_zero_and_invalid_rates_give_zero(sampler: ort.InferenceSession) -> None:
    assert not _sample(sampler, np.zeros((50, 512), np.float32), 3).any()
    invalid = np.array([[np.nan, -1.0, -np.inf, -1e-30, -0.0, 0.0] * 1000], np.float32)
    assert not _sample(sampler, invalid, 3).any()


@pytest.mark.parametrize("patches", [0, 1, 7, 1200])
@pytest.mark.parametrize("latents", [512, 3])
def test_dynamic_shapes(sampler: ort.InferenceSession, patches: int, latents: int) -> None:
    rates = np.random.default_rng(patches * 1000 + latents).exponential(3.0, (patches, latents)).astype(np.float32)
    counts = _sample(sampler, rates, 8)
    assert counts.shape == (patches, latents) and counts.dtype == np.int32
    np.testing.assert_array_equal(counts, poisson_reference(rates, 8))


def test_large_rates_are_not_capped(sampler: ort.InferenceSession) -> None:
    counts = _sample(sampler, np.full((10, 1000), 200.0, np.float32), 4)
    assert counts.dtype == np.int32 and counts.max() > 255


def test_rates_above_the_limit_are_clamped(sampler: ort.InferenceSession) -> None:
    counts = _sample(sampler, np.array([[1e4] * 2000 + [2e7] * 2000 + [np.inf] * 2000]), 6).ravel()
    for part, lam in ((counts[:2000], 1e4), (counts[2000:4000], MAX_RATE), (counts[4000:], MAX_RATE)):
        assert abs(part.mean() - lam) < Z_TOLERANCE * np.sqrt(lam / part.size)


@pytest.mark.gpu
def test_cuda_gives_the_cpu_counts(sampler: ort.InferenceSession) -> None:
    """Same integer stream on both EPs; Exp/Log may differ by an ulp, which flips a count ~never."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider here")
    cuda = ort.InferenceSession(
        build_sampler_model().SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    for rates in (_rate_grid(), realistic_rates(1200, 512, seed=5), np.full((1200, 512), 200.0, np.float32)):
        np.testing.assert_array_equal(_sample(cuda, rates, 21), _sample(sampler, rates, 21))


# --------------------------------------------------------------------------------- generator, graph
def test_keys_are_admissible_and_distinct() -> None:
    assert is_admissible_key(DERIVATION_KEY_A) and is_admissible_key(DERIVATION_KEY_B)
    seeds = [*range(-500, 500), 2**63 - 1, -(2**63), 2**32, 2**62]
    keys = [derive_key(s) for s in seeds]
    assert all(is_admissible_key(k) for k in keys)
    assert len(set(keys)) == len(keys)
    assert not is_admissible_key(0x0000000100000001)


def test_squares32_top_bits_are_a_prefix() -> None:
    counters = np.arange(1000, dtype=np.uint64) * np.uint64(2**31 + 7)
    full = squares32(counters, DERIVATION_KEY_A)
    assert full.max() < 2**32 and full.dtype == np.uint64
    np.testing.assert_array_equal(squares32(counters, DERIVATION_KEY_A, top_bits=24), full >> np.uint64(8))
    bits = np.unpackbits(full.astype(">u4").view(np.uint8))
    assert abs(bits.mean() - 0.5) < Z_TOLERANCE * 0.5 / np.sqrt(bits.size)


def test_default_graph_uses_only_cuda_implemented_standard_ops() -> None:
    """Every node, Loop bodies included, has a CUDA kernel for its op version and input types (ONNX Runtime's
    kernel table, pvae.bench.cuda_kernels); the bitshift variant does not (CPU EP only)."""
    from pvae.bench.gpu_check import all_nodes, cuda_kernel_gaps

    nodes = all_nodes(build_sampler_model().graph)
    assert {n.domain for n in nodes} <= {""}
    assert cuda_kernel_gaps(build_sampler_model()) == []
    assert "BitShift" in {n.op_type for n in all_nodes(build_sampler_model(shift="bitshift").graph)}
    assert cuda_kernel_gaps(build_sampler_model(shift="bitshift"))


def test_append_sampler_to_the_rate_path() -> None:
    combined = append_sampler(build_rate_path_model(latents=64), RATES_INPUT)
    assert [i.name for i in combined.graph.input] == ["x", SEED_INPUT]
    session = _session(combined)
    patches = np.random.default_rng(0).standard_normal((33, 256)).astype(np.float32)
    rates, counts = session.run([RATES_INPUT, COUNTS_OUTPUT], {"x": patches, SEED_INPUT: np.array(9, np.int64)})
    assert counts.shape == (33, 64)
    np.testing.assert_array_equal(counts, poisson_reference(rates, 9))
    with pytest.raises(ValueError, match="already exists"):
        append_sampler(combined, RATES_INPUT)


@pytest.mark.parametrize("options", [{"opset": 17}, {"inversion_block": 0}, {"shift": "xor"}])
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_sampler_model(**options)


def test_loop_trip_counts_of_the_benchmark_cases() -> None:
    realistic = loop_trip_counts(realistic_rates(1200, 512), 0)
    assert 1 <= realistic.inversion <= 8
    assert loop_trip_counts(np.full((100, 512), 200.0, np.float32), 0).inversion == 0
    assert loop_trip_counts(np.zeros((10, 10), np.float32), 0).ptrs == 0
