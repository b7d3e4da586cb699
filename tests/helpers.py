"""What the test modules share besides fixtures (those are in conftest.py).

- ``serve_config``: the config of a test server (loopback port 0, CPU, no metrics HTTP, no warm-up
  sizes, a short batching delay and drain), with a module's own settings on top.
- ``BundleGraphs``: a bundle's ONNX graphs run directly with ONNX Runtime, the oracle of what the
  service must return.
- ``unpack_floats``, ``unpack_sparse_counts``, ``unpack_dense_counts``: the exact inverses of
  ``pvae.serving.pack``'s packing, the oracle of the wire layouts pvae.proto documents.
- ``wait_for``: wait until a condition holds (a deadline, not a sleep, bounds it).
- ``poisson_chi_square``: Pearson's test of counts against Poisson(lambda) over merged bins, which the
  sampler tests (graph and native) share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pvae.bundle import Bundle
from pvae.errors import InputError
from pvae.serving.config import ServeConfig
from pvae.serving.options import FloatFormat
from pvae.serving.pack import (
    FLOAT_DTYPES,
    LATENT_DTYPE,
    OFFSET_DTYPE,
    U8_SATURATED,
    DenseCountsPacked,
    SparseCountsPacked,
)

#: What every test server shares; a module's SERVER_CONFIG (conftest's ``server`` fixture) or a test's
#: own arguments go on top.
TEST_SERVER: dict[str, Any] = {"port": 0, "metrics_port": None, "device": "cpu", "warmup_sizes": (),
                               "max_batch_delay_s": 0.001, "drain_grace_s": 1.0}
#: How long ``wait_for`` waits by default, seconds: generous, it returns as soon as the condition holds.
WAIT_S = 30.0


def serve_config(settings: Mapping[str, Any] | None = None, /, **overrides: Any) -> ServeConfig:
    """TEST_SERVER, then ``settings`` (a module's), then ``overrides`` (a test's)."""
    return ServeConfig(**{**TEST_SERVER, **(settings or {}), **overrides})


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S, poll: float = 0.01) -> None:
    """Return once ``condition()`` holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


class BundleGraphs:
    """A bundle's graphs run directly with ONNX Runtime (CPU): what the service must return."""

    def __init__(self, bundle: Bundle) -> None:
        import onnxruntime as ort

        self.sessions = {name: ort.InferenceSession(str(bundle.graph_path(name)), providers=["CPUExecutionProvider"])
                         for name in ("frame", "rates", "sampler", "decoder")}

    def run(self, graph: str, *inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of ``graph`` by name, for its inputs in order."""
        session = self.sessions[graph]
        feed = {tensor.name: value for tensor, value in zip(session.get_inputs(), inputs, strict=True)}
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(None, feed), strict=True))

    def frame(self, gray: np.ndarray) -> dict[str, np.ndarray]:
        """The frame graph's outputs for one uint8 gray (H, W) frame (batch axis removed)."""
        return {name: value[0] for name, value in self.run("frame", gray[None]).items()}

    def rates(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """The rates graph's outputs (``rates``, ``log_rates``) for float32 (N, P * P) patches."""
        return self.run("rates", patches)

    def counts(self, rates: np.ndarray, seed: int) -> np.ndarray:
        """The sampler graph's counts for ``rates`` and ``seed``."""
        return self.run("sampler", rates.astype(np.float32), np.array(seed, np.int64))["counts"]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """The decoder graph's patches for (N, K) latents."""
        return self.run("decoder", latents)["patches"]


# ----------------------------------------------------------------------------- the wire layouts, read back


def unpack_floats(data: bytes, fmt: FloatFormat, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``pack_floats``, as float32."""
    return np.frombuffer(data, dtype=FLOAT_DTYPES[fmt]).astype(np.float32).reshape(shape)


def unpack_sparse_counts(packed: SparseCountsPacked, n_patches: int, n_latents: int) -> np.ndarray:
    """Sparse events -> dense int32 (N, K) counts (the exact inverse of ``pack_sparse_counts``)."""
    offsets = np.frombuffer(packed.patch_offsets, dtype=OFFSET_DTYPE)
    latents = np.frombuffer(packed.latents, dtype=LATENT_DTYPE).astype(np.int64)
    values = np.frombuffer(packed.counts, dtype=np.uint8).astype(np.int32)
    if offsets.shape != (n_patches + 1,) or latents.shape != values.shape or offsets[-1] != len(values):
        raise InputError("sparse counts: inconsistent patch_offsets, latents and counts lengths")
    values[values == U8_SATURATED] = np.asarray(packed.large_counts, dtype=np.int32)
    rows = np.repeat(np.arange(n_patches), np.diff(offsets).astype(np.int64))
    dense = np.zeros((n_patches, n_latents), dtype=np.int32)
    dense[rows, latents] = values
    return dense


def unpack_dense_counts(packed: DenseCountsPacked, n_patches: int, n_latents: int) -> np.ndarray:
    """Dense uint8 counts -> int32 (N, K) (saturated entries read 255)."""
    return np.frombuffer(packed.counts, dtype=np.uint8).astype(np.int32).reshape(n_patches, n_latents)


#: Chi-square bins are merged until each expects at least this many counts.
MIN_EXPECTED_PER_BIN = 5.0


def poisson_chi_square(counts: np.ndarray, lam: float) -> tuple[list[int], np.ndarray, float]:
    """(observed, expected, p-value) of Pearson's chi-square of ``counts`` against Poisson(``lam``), over
    contiguous count ranges merged until each expects >= 5 (the last range is open); the expected counts
    are normalised to the sample size, which removes the 1e-12 pmf truncation."""
    from scipy import stats

    n = counts.size
    bins, lo, acc = [], 0, 0.0
    for k in range(int(stats.poisson.ppf(1 - 1e-12, lam)) + 2):
        acc += n * stats.poisson.pmf(k, lam)
        if acc >= MIN_EXPECTED_PER_BIN and n * stats.poisson.sf(k, lam) >= MIN_EXPECTED_PER_BIN:
            bins.append((lo, k))
            lo, acc = k + 1, 0.0
    observed = [int(np.sum((counts >= a) & (counts <= b))) for a, b in bins] + [int(np.sum(counts >= lo))]
    expected = [n * (stats.poisson.cdf(b, lam) - stats.poisson.cdf(a - 1, lam)) for a, b in bins]
    expected.append(n * stats.poisson.sf(lo - 1, lam))
    expected_arr = np.array(expected) * n / np.sum(expected)
    return observed, expected_arr, float(stats.chisquare(np.array(observed, dtype=np.float64), expected_arr).pvalue)
