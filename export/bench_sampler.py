"""Benchmark: the exported Poisson sampler against the P-VAE rate path, on ONNX Runtime (CPU by default).

Run ``python -m pvae.export.bench_sampler`` (``--help`` for options). It times, at N patches x K latents:

(a) the rate path: ``x (N, D) @ W (D, K)`` then the P-VAE elementwise tail (``docs/pvae-model.md``):
    ``log dr = sc_10(u)``, ``log lambda = sc_5.3(log r + log dr)``, ``lambda = exp(log lambda) + 1.19e-7``;
(b) the sampler on realistic sparse rates (see :func:`realistic_rates`);
(c) the sampler with every rate = 200 (stress case);
(d) the sampler with every rate = 1;

and prints the median (and fastest) time of each, the ratio sampler / rate path, and how many iterations
the sampler's two Loops ran (each ends in a device-to-host sync on CUDA). Rates for (b) are synthetic
until the bundled model's rates replace them. On the CPU EP, ONNX Runtime's Softplus dominates the rate
path (about 70 % of it), so the ratio also depends on how the exported model writes its soft clamps.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pvae.export.sampler import (
    COUNTS_OUTPUT,
    DEFAULT_INVERSION_BLOCK,
    DEFAULT_OPSET,
    RATES_INPUT,
    SEED_INPUT,
    ShiftMode,
    build_sampler_model,
    loop_trip_counts,
)

__all__ = ["BenchConfig", "build_rate_path_model", "main", "realistic_rates", "run_benchmark"]

PATCH_PIXELS = 256  # D: a 16x16 patch (docs/pvae-model.md)
LATENTS = 512  # K for linear decoders on patches
VGA_PATCHES = 1200  # N: a 640x480 frame cut into 16x16 patches
RATE_EPSILON = 1.19e-7  # lambda = exp(log lambda) + 1.19e-7 (docs/pvae-model.md)
MODULATION_CLAMP = 10.0  # log dr = sc_10(u)
RATE_CLAMP = 5.3  # log lambda = sc_5.3(...), the paper default
LOG_PRIOR_RANGE = (-6.0, -4.0)  # log r init for linear decoders
ENCODER_INIT_STD = 0.05  # N(0, 0.05^2) for the linear encoder
REALISTIC_MEDIAN = 0.02  # median rate of the synthetic sparse codes
REALISTIC_LOG_STD = 1.5  # sigma of log rate: mean rate 0.062 (~38k spikes per 614,400 latents),
# 0.45 % of rates > 1, 1.7e-5 > 10, the largest of 614,400 ~30
REALISTIC_MAX = 50.0  # clip of the synthetic tail
STRESS_RATE = 200.0  # ~ e**5.3, the model's soft clamp
UNIT_RATE = 1.0


@dataclass(frozen=True)
class BenchConfig:
    """What to time."""

    patches: int = VGA_PATCHES
    """N, rows of the rate tensor."""
    latents: int = LATENTS
    """K, columns of the rate tensor."""
    repeats: int = 30
    """Timed runs per case; the median is reported."""
    warmup: int = 3
    """Untimed runs per case."""
    seed: int = 0
    """Sampler seed and the seed of the synthetic data."""
    inversion_block: int = DEFAULT_INVERSION_BLOCK
    """Inversion steps per Loop iteration of the sampler graph."""
    shift: ShiftMode = "div"
    """uint64 right shift of the sampler graph: "div" (portable) or "bitshift" (CPU EP only)."""
    provider: str = "CPUExecutionProvider"
    """ONNX Runtime execution provider."""
    threads: int = 0
    """ONNX Runtime intra-op threads; 0 is its default (one per physical core)."""

    def __post_init__(self) -> None:
        for name in ("patches", "latents", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


def build_rate_path_model(latents: int = LATENTS, seed: int = 0) -> onnx.ModelProto:
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
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pvae.export.bench_sampler")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model)
    return model


def realistic_rates(patches: int, latents: int, seed: int = 0) -> np.ndarray:
    """Synthetic sparse codes: lognormal(median 0.02, sigma of log 1.5), clipped to [1.19e-7, 50]."""
    rng = np.random.default_rng(seed)
    log_rates = np.log(REALISTIC_MEDIAN) + REALISTIC_LOG_STD * rng.standard_normal((patches, latents))
    return np.clip(np.exp(log_rates), RATE_EPSILON, REALISTIC_MAX).astype(np.float32)


def run_benchmark(config: BenchConfig) -> dict[str, list[float]]:
    """Seconds per run of each case ("rate_path", "realistic", "stress", "unit").

    The cases are timed round-robin (one run of each per repeat), so a change in machine load affects
    all of them alike and the ratios stay fair.
    """
    import onnxruntime as ort  # the [cpu] or [gpu] extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads  # 0: ONNX Runtime's default
    providers = [config.provider]
    rate_model = build_rate_path_model(config.latents, config.seed)
    rate_session = ort.InferenceSession(rate_model.SerializeToString(), options, providers=providers)
    sampler = build_sampler_model(inversion_block=config.inversion_block, shift=config.shift)
    sampler_session = ort.InferenceSession(sampler.SerializeToString(), options, providers=providers)
    rng = np.random.default_rng(config.seed)
    patches = rng.standard_normal((config.patches, PATCH_PIXELS)).astype(np.float32)
    seed = np.array(config.seed, dtype=np.int64)
    shape = (config.patches, config.latents)
    runs: dict[str, Callable[[], object]] = {"rate_path": lambda: rate_session.run(None, {"x": patches})}
    for name, rates in (
        ("realistic", realistic_rates(*shape, seed=config.seed)),
        ("stress", np.full(shape, STRESS_RATE, dtype=np.float32)),
        ("unit", np.full(shape, UNIT_RATE, dtype=np.float32)),
    ):
        feeds = {RATES_INPUT: rates, SEED_INPUT: seed}

        def sample(feeds: dict[str, np.ndarray] = feeds) -> object:
            return sampler_session.run([COUNTS_OUTPUT], feeds)

        runs[name] = sample
    for run in runs.values():
        for _ in range(config.warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(config.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def _parse(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog="python -m pvae.export.bench_sampler", description=__doc__.split("\n")[0])
    defaults = BenchConfig()
    parser.add_argument("--patches", type=int, default=defaults.patches, help="N (default %(default)s)")
    parser.add_argument("--latents", type=int, default=defaults.latents, help="K (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed runs (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed runs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default %(default)s)")
    parser.add_argument(
        "--inversion-block",
        type=int,
        default=defaults.inversion_block,
        help="inversion steps per Loop iteration (default %(default)s)",
    )
    parser.add_argument(
        "--shift",
        choices=["div", "bitshift"],
        default=defaults.shift,
        help="uint64 right shift: div (CPU+CUDA) or bitshift (CPU only) (default %(default)s)",
    )
    parser.add_argument("--provider", default=defaults.provider, help="ORT provider (default %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="intra-op threads, 0 = ORT default")
    args = parser.parse_args(argv)
    return BenchConfig(
        patches=args.patches,
        latents=args.latents,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        inversion_block=args.inversion_block,
        shift=args.shift,
        provider=args.provider,
        threads=args.threads,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, run the benchmark and print one line per case."""
    config = _parse(argv)
    times = run_benchmark(config)
    shape = (config.patches, config.latents)
    trips = {
        "realistic": loop_trip_counts(realistic_rates(*shape, seed=config.seed), config.seed, config.inversion_block),
        "stress": loop_trip_counts(np.full(shape, STRESS_RATE, np.float32), config.seed, config.inversion_block),
        "unit": loop_trip_counts(np.full(shape, UNIT_RATE, np.float32), config.seed, config.inversion_block),
    }
    base = float(np.median(times["rate_path"]))
    print(
        f"N={config.patches} K={config.latents} provider={config.provider} threads={config.threads or 'default'} "
        f"shift={config.shift} inversion_block={config.inversion_block}: median (min) of {config.repeats} "
        "round-robin runs"
    )
    labels = {
        "rate_path": "(a) rate path",
        "realistic": "(b) sampler, realistic",
        "stress": "(c) sampler, all 200",
        "unit": "(d) sampler, all 1",
    }
    for name, label in labels.items():
        median, fastest = float(np.median(times[name])), float(np.min(times[name]))
        line = f"{label:<24} {median * 1e3:8.2f} ms ({fastest * 1e3:7.2f})  {median / base:5.2f}x rate path"
        if name in trips:
            line += f"  Loop iterations: inversion {trips[name].inversion}, ptrs {trips[name].ptrs}"
        print(line)


if __name__ == "__main__":
    main()
