"""``pvae-bench-export``: ONNX Runtime rate path vs torch eager, and the sampler's cost, in one run.

    pvae-bench-export                         # the bundled default model (exported to a temp dir)
    pvae-bench-export runs/quick/best.pt      # any checkpoint
    pvae-bench-export best.pt --bundle best.bundle --batches 1,64,1200,4800 --rounds 7

What it measures (same process, same inputs, same thread settings; every ratio is between figures
taken in this run):

1. patches/s of the rate path at each batch size: torch eager (``VAE.encode`` under
   ``torch.inference_mode``) vs ONNX Runtime (``rates.onnx``, CPU EP, default options). The two
   are timed in alternating rounds and each reports its median round, so load drifting on a
   shared machine hits both alike.
2. the sampler (``sampler.onnx``, a new seed per call) at 1200 patches (one VGA frame) as a fraction
   of the rate path's time at 1200: with the model's real rates (the frame graph's rates of a
   natural 640x480 frame) and with every rate = 200 (the stress case at the model's clamp).
3. the frame graph on one VGA frame (preprocessing, rates and reconstruction), for reference.
4. each graph against its baseline, at 1 and at 2 intra-op threads (or ``--threads``), timed in
   alternating rounds with it (docs/benchmarks.md lists the targets):

   ==============================  =================================================  ==========
   graph                           baseline (same thread count)                       target
   ==============================  =================================================  ==========
   preprocessing, VGA frame        OpenCV: the same filters and LCN / z-score         <= 5 ms (*)
   frame graph, VGA frame          OpenCV preprocessing                               <= 8 ms (*)
   frame graph cut to its rates    OpenCV preprocessing                               (reported)
   rates graph, 1200 x D           a plain MatMul + Exp graph of the same shape       <= 1.5x
   sampler, real rates 1200 x K    the rates graph                                    <= 1x
   native sampler, real rates      the rates graph                                    <= 1x
   native sampler, every rate 200  the rates graph                                    (reported)
   ==============================  =================================================  ==========

   With ``--against DIR`` (another bundle, e.g. one exported before an exporter change), that bundle's
   rates, preprocessing and frame graphs run in the same rounds, and a last table gives this bundle's
   time over theirs.

   (*) set on a machine where the OpenCV baseline took 4.4 ms (``OPENCV_REFERENCE_MS``). Each is judged
   twice: in this run's ms, and scaled to that machine's speed by the same run's OpenCV time (the
   ratio to OpenCV against 5 / 4.4 = 1.14x and 8 / 4.4 = 1.82x), which does not move with the host.

   "sampler" is the bundle's ``sampler.onnx``; "native" is ``pvae.native`` (what ``pvae-serve`` uses on
   a CPU host), run with the same thread count, and its counts are checked equal to the graph's.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvae.bench.host import OPENCV_REFERENCE_MS, opencv_preprocess
from pvae.bundle import load_bundle
from pvae.cli import run_cli
from pvae.errors import ConfigError
from pvae.export.exporter import export_bundle
from pvae.export.verify import natural_images, sample_patches
from pvae.native import NativeUnavailable
from pvae.native import sampler as native
from pvae.preprocess_graph import preprocess_model
from pvae.training.checkpoint import build_model, default_model_path, load_checkpoint
from pvae.training.data import PatchConfig

__all__ = ["GraphTarget", "Timing", "main", "measure_pair", "opencv_preprocess", "vga_frame"]

PROG = "pvae-bench-export"
#: Batch sizes: one patch, a small batch, one VGA frame (40 x 30 patches), four frames.
DEFAULT_BATCHES = (1, 64, 1200, 4800)
#: Patches in one 640x480 frame, the size the sampler is compared at.
VGA_PATCHES = 1200
VGA_SHAPE = (480, 640)
#: The model's rate ceiling (e^5.3 ~ 200): the sampler's stress case.
STRESS_RATE = 200.0
#: Rounds per measurement (medians are reported) and the minimum time of one round.
DEFAULT_ROUNDS = 5
DEFAULT_ROUND_SECONDS = 0.2
#: Calls before timing starts (first-run allocations, lazy init).
WARMUP_CALLS = 3
#: Intra-op thread counts of the graph-vs-baseline section when --threads is not given.
GRAPH_THREADS = (1, 2)


@dataclass(frozen=True)
class Timing:
    """Median seconds per call over rounds, and the number of calls timed."""

    seconds: float
    calls: int


def _round(fn: Callable[[], object], round_seconds: float) -> tuple[float, int]:
    """One round: call fn until round_seconds have passed; (seconds per call, calls)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= round_seconds:
            return elapsed / calls, calls


def measure_pair(
    fns: dict[str, Callable[[], object]], rounds: int = DEFAULT_ROUNDS, round_seconds: float = DEFAULT_ROUND_SECONDS
) -> dict[str, Timing]:
    """Time several functions in alternating rounds; the median round of each."""
    for fn in fns.values():
        for _ in range(WARMUP_CALLS):
            fn()
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    total: dict[str, int] = dict.fromkeys(fns, 0)
    for _ in range(rounds):
        for name, fn in fns.items():
            seconds, calls = _round(fn, round_seconds)
            per_call[name].append(seconds)
            total[name] += calls
    return {name: Timing(statistics.median(values), total[name]) for name, values in per_call.items()}


def _parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise ConfigError(f"--batches: expected comma-separated integers, got {text!r}") from None
    if not batches or min(batches) < 1:
        raise ConfigError(f"--batches: sizes must be >= 1, got {text!r}")
    return batches


def vga_frame() -> np.ndarray:
    """uint8 (1, 480, 640): scikit-image's camera photograph resized to VGA, the frame the graphs are timed on."""
    import cv2

    image = natural_images()[0]  # skimage camera, 512 x 512
    return cv2.resize(image, (VGA_SHAPE[1], VGA_SHAPE[0]), interpolation=cv2.INTER_AREA)[None]  # (1, 480, 640)


def _session(model: Path | bytes, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class GraphTarget:
    """One row of the graph-vs-baseline section: a target in ms (absolute) or as a ratio."""

    graph: str
    baseline: str
    max_ms: float | None = None
    max_ratio: float | None = None
    reference_ms: float | None = None
    """The baseline's time on the machine where ``max_ms`` was set. An absolute target then also gets a
    same-run verdict: the graph's time scaled by reference_ms / (this run's baseline time), i.e. the
    graph's ratio to its baseline against max_ms / reference_ms. A host that runs everything 3x slower
    misses every absolute target; the scaled verdict does not move with the host's speed."""

    def verdict(self, seconds: float, ratio: float) -> str:
        if self.max_ms is None and self.max_ratio is None:
            return "no target (reported)"
        if self.max_ms is not None:
            here = f"<= {self.max_ms:g} ms: " + ("met" if seconds * 1e3 <= self.max_ms else "MISSED")
            if self.reference_ms is None:
                return here
            scaled = ratio * self.reference_ms
            return (f"{here}; at the reference speed ({self.baseline} {self.reference_ms:g} ms) {scaled:.2f} ms: "
                    + ("met" if scaled <= self.max_ms else "MISSED"))
        assert self.max_ratio is not None
        return f"<= {self.max_ratio:g}x: " + ("met" if ratio <= self.max_ratio else "MISSED")


#: The targets of the graph section (docs/benchmarks.md), in the order they are printed.
GRAPH_TARGETS = (
    GraphTarget("preprocess", "opencv", max_ms=5.0, reference_ms=OPENCV_REFERENCE_MS),
    GraphTarget("frame", "opencv", max_ms=8.0, reference_ms=OPENCV_REFERENCE_MS),
    GraphTarget("frame_rates", "opencv"),
    GraphTarget("rates", "matmul_exp", max_ratio=1.5),
    GraphTarget("sampler_real", "rates", max_ratio=1.0),
    GraphTarget("native_real", "rates", max_ratio=1.0),
    GraphTarget("native_stress", "rates"),
)


def _matmul_exp_model(input_dim: int, n_latents: int) -> bytes:
    """The rates graph's floor: x (N, D) @ W (D, K) then Exp, nothing else (random W)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = (np.random.default_rng(0).standard_normal((input_dim, n_latents)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["u"]), helper.make_node("Exp", ["u"], ["y"])],
        "matmul_exp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", input_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_latents])],
        [numpy_helper.from_array(weight, "w")],
    )
    opsets = [helper.make_opsetid("", 18)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model.SerializeToString()


def _graph_section(
    graphs: dict[str, bytes],
    cfg: PatchConfig | None,
    frame: np.ndarray,
    patches: np.ndarray,
    n_latents: int,
    thread_counts: Sequence[int],
    rounds: int,
    round_seconds: float,
    say: Callable[[str], None],
    kernel: native.NativeSampler | None,
    against: dict[str, bytes] | None = None,
) -> list[tuple[int, dict[str, Timing]]]:
    """Time every graph of GRAPH_TARGETS and its baseline in alternating rounds, per thread count; with
    ``against`` (another bundle's graphs), also its rates, preprocessing and frame graphs, in the same
    rounds, under the names in AGAINST_GRAPHS."""
    import cv2
    import onnx
    import onnx.utils

    patch = math.isqrt(patches.shape[1])
    frame_model = onnx.load_from_string(graphs["frame"])
    pre_bytes = preprocess_model(frame_model, (patch, patch)).SerializeToString()
    baseline_bytes = _matmul_exp_model(patches.shape[1], n_latents)
    # What pvae-serve runs for a request of counts and stats: the frame graph cut down to its rates.
    frame_rates_bytes = onnx.utils.Extractor(frame_model).extract_model(["frames"], ["rates"]).SerializeToString()
    opencv = opencv_preprocess(cfg) if cfg is not None else None
    # The other bundle's graphs, parsed and cut once for every thread count: name -> (model bytes, feed)
    twins: dict[str, tuple[bytes, str]] = {}
    if against is not None:
        other_pre = preprocess_model(onnx.load_from_string(against["frame"]), (patch, patch)).SerializeToString()
        twins = {"rates": (against["rates"], "patches"), "preprocess": (other_pre, "frames"),
                 "frame": (against["frame"], "frames")}
    seeds = iter(range(1, 1 << 62))
    results = []
    for threads in thread_counts:
        cv2.setNumThreads(threads)
        sessions = {
            "matmul_exp": (_session(baseline_bytes, threads), "x"),
            "rates": (_session(graphs["rates"], threads), "patches"),
            "preprocess": (_session(pre_bytes, threads), "frames"),
            "frame": (_session(graphs["frame"], threads), "frames"),
            "frame_rates": (_session(frame_rates_bytes, threads), "frames"),
        }
        for name, (graph_bytes, feed) in twins.items():
            sessions[AGAINST_GRAPHS[name]] = (_session(graph_bytes, threads), feed)
        sampler = _session(graphs["sampler"], threads)
        real_rates = sessions["frame"][0].run(["rates"], {"frames": frame})[0][0]
        def call(session: Any, name: str) -> Callable[[], object]:
            feeds = {name: frame if name == "frames" else patches}
            return lambda: session.run(None, feeds)

        def sample(session: Any = sampler, rates: np.ndarray = real_rates) -> object:
            return session.run(None, {"rates": rates, "seed": np.asarray(next(seeds), np.int64)})

        fns: dict[str, Callable[[], object]] = {key: call(*value) for key, value in sessions.items()}
        fns["sampler_real"] = sample
        if kernel is not None:
            stress = np.full_like(real_rates, STRESS_RATE)
            fns["native_real"] = _native_call(kernel, real_rates, seeds, threads)
            fns["native_stress"] = _native_call(kernel, stress, seeds, threads)
        if opencv is not None:
            fns["opencv"] = lambda: opencv(frame[0])
        say(f"graphs vs baselines, {threads} intra-op thread(s): {', '.join(fns)} in alternating rounds ...")
        results.append((threads, measure_pair(fns, rounds, round_seconds)))
    return results


def _native_call(kernel: native.NativeSampler, rates: np.ndarray, seeds: Iterator[int],
                 threads: int) -> Callable[[], object]:
    return lambda: kernel.sample(rates, next(seeds), threads)


def _native_sampler(say: Callable[[str], None]) -> native.NativeSampler | None:
    try:
        return native.load()
    except NativeUnavailable as exc:
        say(f"native sampler not timed: {exc}")
        return None


#: With --against: each graph of this bundle and the name its twin from the other bundle is timed under.
AGAINST_GRAPHS = {"preprocess": "preprocess@against", "frame": "frame@against", "rates": "rates@against"}


def _print_against_section(results: list[tuple[int, dict[str, Timing]]], against: Path) -> None:
    print()
    print(f"this bundle vs --against {against} (same alternating rounds; ratio < 1: this bundle is faster)")
    print(f"{'threads':>7}  {'graph':<13} {'ms':>8}  {'against ms':>10}  {'ratio':>7}")
    for threads, timings in results:
        for graph, twin in AGAINST_GRAPHS.items():
            if graph in timings and twin in timings:
                mine, theirs = timings[graph].seconds, timings[twin].seconds
                print(f"{threads:>7}  {graph:<13} {mine * 1e3:>8.2f}  {theirs * 1e3:>10.2f}  {mine / theirs:>6.2f}x")


def _print_graph_section(results: list[tuple[int, dict[str, Timing]]], rounds: int, round_seconds: float) -> None:
    print()
    print(f"graphs vs baselines (median of {rounds} alternating rounds of {round_seconds:g} s; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())})")
    print(f"{'threads':>7}  {'graph':<13} {'ms':>8}  {'baseline':<11} {'ms':>8}  {'ratio':>7}  target")
    for threads, timings in results:
        for target in GRAPH_TARGETS:
            if target.graph not in timings or target.baseline not in timings:
                continue
            seconds, base = timings[target.graph].seconds, timings[target.baseline].seconds
            ratio = seconds / base
            print(f"{threads:>7}  {target.graph:<13} {seconds * 1e3:>8.2f}  {target.baseline:<11} {base * 1e3:>8.2f}  "
                  f"{ratio:>6.2f}x  {target.verdict(seconds, ratio)}")


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "checkpoint", nargs="?", type=Path, default=None, help="checkpoint (default: the bundled default model)"
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="an exported bundle of that checkpoint (default: export one to a temp dir)",
    )
    parser.add_argument(
        "--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="rate-path batch sizes (default: %(default)s)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="another bundle (e.g. one exported before an exporter change): its rates, preprocessing and "
        "frame graphs are timed in the same rounds and compared",
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="timed rounds per figure")
    parser.add_argument("--round-seconds", type=float, default=DEFAULT_ROUND_SECONDS, help="seconds per round")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads for both torch and ONNX Runtime (default: each library's own)",
    )
    args = parser.parse_args(argv)
    batches = _parse_batches(args.batches)
    if args.rounds < 1 or args.round_seconds <= 0:
        raise ConfigError("--rounds must be >= 1 and --round-seconds > 0")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    def say(line: str) -> None:
        print(f"{PROG}: {line}", flush=True)

    ckpt_path = args.checkpoint if args.checkpoint is not None else default_model_path()
    ckpt = load_checkpoint(ckpt_path)
    model = build_model(ckpt)
    raw_cfg = ckpt.data.get("preprocessing")
    cfg = PatchConfig.from_dict(raw_cfg) if raw_cfg else None
    with tempfile.TemporaryDirectory(prefix="pvae-bench-") as scratch:
        if args.bundle is None:
            say(f"exporting {ckpt_path} (ONNX only, no verification) ...")
            bundle_dir = export_bundle(ckpt_path, Path(scratch) / "bundle", formats="onnx", verify=False)
        else:
            bundle_dir = args.bundle
        bundle = load_bundle(bundle_dir)
        rates_session = _session(bundle.graph_path("rates"), args.threads)
        sampler_session = _session(bundle.graph_path("sampler"), args.threads)
        frame_session = _session(bundle.graph_path("frame"), args.threads)
        graph_bytes = {name: bundle.graph_path(name).read_bytes() for name in ("rates", "sampler", "frame")}
        against_bytes = None
        if args.against is not None:
            other = load_bundle(args.against)
            against_bytes = {name: other.graph_path(name).read_bytes() for name in ("rates", "frame")}

    shape = tuple(ckpt.model_config.input_shape)
    say(f"sampling {max(batches)} natural patches ...")
    pool = sample_patches(cfg, shape, n=max(batches))
    threads = torch.get_num_threads()
    ort_threads = args.threads if args.threads is not None else "default"
    say(
        f"torch {torch.__version__} ({threads} threads) vs onnxruntime (CPU EP, {ort_threads} threads), "
        f"K={ckpt.model_config.n_latents}"
    )

    rows = []
    for batch in batches:
        x_np = np.ascontiguousarray(pool[:batch])
        x_t = torch.as_tensor(x_np)
        say(f"rate path, batch {batch} ...")

        def torch_call(x_t: torch.Tensor = x_t) -> object:
            with torch.inference_mode():
                return model.encode(x_t)

        def ort_call(x_np: np.ndarray = x_np) -> object:
            return rates_session.run(None, {"patches": x_np})

        timing = measure_pair({"torch": torch_call, "onnx": ort_call}, args.rounds, args.round_seconds)
        rows.append((batch, timing["torch"], timing["onnx"]))

    say("frame graph and sampler on a 640x480 frame ...")
    frame = vga_frame()
    real_rates = frame_session.run(["rates"], {"frames": frame})[0][0]
    stress_rates = np.full_like(real_rates, STRESS_RATE)
    vga_patches = np.ascontiguousarray(np.resize(pool, (VGA_PATCHES, pool.shape[1])))
    seeds = iter(range(1, 1 << 62))

    def sample(rates: np.ndarray) -> Callable[[], object]:
        return lambda: sampler_session.run(None, {"rates": rates, "seed": np.asarray(next(seeds), np.int64)})

    timings = measure_pair(
        {
            "rates": lambda: rates_session.run(None, {"patches": vga_patches}),
            "sampler_real": sample(real_rates),
            "sampler_stress": sample(stress_rates),
            "frame": lambda: frame_session.run(None, {"frames": frame}),
        },
        args.rounds,
        args.round_seconds,
    )
    spikes = sampler_session.run(None, {"rates": real_rates, "seed": np.asarray(1, np.int64)})[0]
    thread_counts = (args.threads,) if args.threads is not None else GRAPH_THREADS
    kernel = _native_sampler(say)
    graph_results = _graph_section(
        graph_bytes, cfg, frame, vga_patches, ckpt.model_config.n_latents, thread_counts, args.rounds,
        args.round_seconds, say, kernel, against_bytes,
    )

    print()
    print(f"rate path, patches/s (median of {args.rounds} alternating rounds of {args.round_seconds:g} s)")
    print(f"{'batch':>6}  {'torch eager':>12}  {'onnxruntime':>12}  {'ort/torch':>9}")
    for batch, t_torch, t_onnx in rows:
        print(
            f"{batch:>6}  {batch / t_torch.seconds:>12,.0f}  {batch / t_onnx.seconds:>12,.0f}  "
            f"{t_torch.seconds / t_onnx.seconds:>8.2f}x"
        )
    rate_time = timings["rates"].seconds
    print()
    print(f"sampler at {VGA_PATCHES} patches x K={real_rates.shape[1]} (rate path: {rate_time * 1e3:.2f} ms)")
    print(f"{'rates':>28}  {'ms':>8}  {'fraction of rate path':>21}")
    print(
        f"{'real (VGA frame), mean ' + format(float(real_rates.mean()), '.3g'):>28}  "
        f"{timings['sampler_real'].seconds * 1e3:>8.2f}  {timings['sampler_real'].seconds / rate_time:>20.2f}x"
    )
    print(
        f"{'stress, every rate = 200':>28}  {timings['sampler_stress'].seconds * 1e3:>8.2f}  "
        f"{timings['sampler_stress'].seconds / rate_time:>20.2f}x"
    )
    if kernel is not None:
        draw = kernel.draw(real_rates, 1)
        same = np.array_equal(draw.counts, spikes)
        print(f"native sampler, seed 1: counts {'identical to' if same else 'DIFFERENT from'} sampler.onnx's; its "
              f"screen settled {1 - draw.exact_elements / spikes.size:.2%} of the elements")
    print(
        f"real rates: {int(spikes.sum()):,} spikes in {spikes.size:,} latents "
        f"({float((spikes > 0).mean()):.2%} non-zero)"
    )
    print(
        f"frame graph, one 640x480 frame (preprocess + rates + reconstruction): {timings['frame'].seconds * 1e3:.2f} ms"
    )
    _print_graph_section(graph_results, args.rounds, args.round_seconds)
    if args.against is not None:
        _print_against_section(graph_results, args.against)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``pvae-bench-export``)."""
    return run_cli(PROG, _main, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
