"""``pvae-bench-pack``: serving's packing of one VGA frame, the C kernels against the numpy code, same run.

Every packer that has a C kernel (``pvae/native/pack.c``) is timed on the same frame's real outputs, in
alternating rounds with the numpy code it replaces (``pvae.serving.pack`` with ``PVAE_NATIVE=0``, the
specification and the fallback), and both results are compared byte for byte:

    packer                        payload of a pvae.v1 response
    sparse counts                 CountFormat.SPARSE (the default)
    Rice counts                   CountFormat.RICE
    u8log rate codes              FloatFormat.U8_LOG (rates and log-rates as Rice-coded log-grid codes)
    frame statistics              Output.STATS

The frame: the bundled model's (or ``--model``'s) frame graph on a natural 640x480 image, counts drawn
by the engine's sampler with a fixed seed.

    pvae-bench-pack                    # the bundled model, 5 rounds
    pvae-bench-pack --model runs/quick/best.bundle --rounds 9 --json runs/bench-pack.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import pvae
from pvae import native
from pvae.bundle import load_bundle
from pvae.cli import run_cli
from pvae.errors import ConfigError
from pvae.paths import DEFAULT_BUNDLE_RESOURCE
from pvae.serving import pack

__all__ = ["PACKERS", "main", "time_packers"]

PROG = "pvae-bench-pack"
#: Calls per timing (the median is kept) and the seed of the frame's counts.
CALLS = 7
SEED = 7

#: name -> the packing call on (rates float32 (N, K), counts int32 (N, K)).
PACKERS: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "sparse counts": lambda rates, counts: pack.pack_sparse_counts(counts),
    "Rice counts": lambda rates, counts: pack.pack_rice_counts(counts),
    "u8log rate codes": lambda rates, counts: pack.pack_rate_codes(rates, True, True),
    "frame statistics": lambda rates, counts: pack.frame_statistics(counts, rates),
}


@contextmanager
def _numpy_packing() -> Iterator[None]:
    """Packing with the numpy code (``PVAE_NATIVE=0``) inside the block."""
    before = os.environ.get(native.ENV_SWITCH)
    os.environ[native.ENV_SWITCH] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[native.ENV_SWITCH]
        else:
            os.environ[native.ENV_SWITCH] = before


def _require_kernels() -> None:
    if pack.native_packer() is None:
        raise ConfigError("the native kernels are not built or are switched off (PVAE_NATIVE=0): nothing to "
                          "compare; reinstall with a C compiler present (make setup)")


def _median_ms(call: Callable[[], Any], calls: int) -> float:
    call()  # warm: first-use allocations, caches
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_packers(rates: np.ndarray, counts: np.ndarray, rounds: int,
                 calls: int = CALLS) -> dict[str, dict[str, Any]]:
    """Per packer: the C kernel's and the numpy code's median ms over ``rounds`` alternating rounds, their
    ratio and whether their results are equal. ConfigError when the C kernels are not built."""
    _require_kernels()
    samples: dict[str, dict[str, list[float]]] = {name: {"native": [], "numpy": []} for name in PACKERS}
    for _ in range(rounds):
        for name, packer in PACKERS.items():
            call = functools.partial(packer, rates, counts)
            samples[name]["native"].append(_median_ms(call, calls))
            with _numpy_packing():
                samples[name]["numpy"].append(_median_ms(call, calls))
    results = {}
    for name, packer in PACKERS.items():
        fast = packer(rates, counts)
        with _numpy_packing():
            slow = packer(rates, counts)
        native_ms, numpy_ms = statistics.median(samples[name]["native"]), statistics.median(samples[name]["numpy"])
        results[name] = {"native_ms": native_ms, "numpy_ms": numpy_ms, "ratio": native_ms / numpy_ms,
                         "equal": fast == slow}
    return results


def _frame_outputs(model: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(rates, counts, label) of one natural VGA frame through the bundle's frame graph and sampler."""
    from pvae.bench.export import vga_frame
    from pvae.serving.engine import DevicePlan, Engine

    bundle = load_bundle(model or Path(pvae.__file__).parent / DEFAULT_BUNDLE_RESOURCE)
    engine = Engine(bundle, DevicePlan("cpu"))
    batch = engine.run_frames(vga_frame(), ("rates",))
    rates = np.ascontiguousarray(batch.host["rates"][0])
    return rates, engine.sample(batch, 0, seed=SEED), f"{bundle.root}, K={bundle.n_latents}"


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per packer: C kernel ms, numpy ms, their ratio, equal results."""
    lines = [f"{'packer':<18} {'C kernel ms':>11} {'numpy ms':>9} {'ratio':>6}  same bytes"]
    for name, row in results.items():
        lines.append(f"{name:<18} {row['native_ms']:>11.2f} {row['numpy_ms']:>9.2f} {row['ratio']:>5.2f}x  "
                     f"{'yes' if row['equal'] else 'NO'}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, allow_abbrev=False,
                                description="Time serving's packing of one VGA frame: the C kernels against the "
                                "numpy code, in alternating rounds, with their bytes compared.")
    p.add_argument("--model", type=Path, default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (median kept)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
    _require_kernels()
    print(f"{PROG}: running the frame graph and sampler on a 640x480 frame ...", file=sys.stderr, flush=True)
    rates, counts, label = _frame_outputs(args.model)
    print(f"{PROG}: {len(PACKERS)} packers, C kernel vs numpy, {args.rounds} alternating rounds ...",
          file=sys.stderr, flush=True)
    results = time_packers(rates, counts, args.rounds)
    print(format_table(results))
    print(f"(frame: {rates.shape[0]} patches, {int(counts.sum())} spikes, "
          f"{np.count_nonzero(counts) / counts.size:.1%} non-zero; model {label})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": label, "rounds": args.rounds, "packers": results}, indent=2) + "\n")
    return 0 if all(row["equal"] for row in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pvae-bench-pack``."""
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
