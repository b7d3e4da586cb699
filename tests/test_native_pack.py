"""The C packing kernels (pvae.native.pack) give the numpy code's bytes (pvae.serving.pack, run with
PVAE_NATIVE=0): sparse events, frame statistics, Rice codes and 8-bit log-rate codes, on realistic,
ragged and extreme inputs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pvae import native
from pvae.serving import pack


@pytest.fixture(autouse=True)
def _needs_the_library() -> None:
    try:
        native.library()
    except native.NativeUnavailable as exc:
        if os.environ.get("CI") == "true":  # the project's setup installs a compiler: CI must have the kernels
            raise
        pytest.skip(str(exc))


def _both(monkeypatch: pytest.MonkeyPatch, function: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """(native result, numpy result) of ``function(*args)``."""
    assert pack.native_packer() is not None
    fast = function(*args)
    with monkeypatch.context() as patch:
        patch.setenv(native.ENV_SWITCH, "0")
        assert pack.native_packer() is None
        slow = function(*args)
    return fast, slow


def _counts(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "vga":
        rates = np.exp(rng.uniform(np.log(1e-4), np.log(8.0), (1200, 512)))
        return rng.poisson(rates).astype(np.int32)
    if kind == "sparse":
        return rng.poisson(0.01, (300, 512)).astype(np.int32)
    if kind == "zeros":
        return np.zeros((40, 64), np.int32)
    if kind == "large":  # counts past the uint8 escape, and a huge one (Rice parameter near the top)
        counts = rng.poisson(200.0, (37, 53)).astype(np.int32)
        counts[3, 7] = 2_000_000
        counts[::5, 1] = 255
        return counts
    if kind == "ragged":
        return rng.poisson(1.5, (7, 3)).astype(np.int32)
    if kind == "empty_rows":
        return np.zeros((0, 16), np.int32)
    raise AssertionError(kind)


KINDS = ["vga", "sparse", "zeros", "large", "ragged", "empty_rows"]


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_counts_match(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    counts = _counts(kind, np.random.default_rng(1))
    fast, slow = _both(monkeypatch, pack.pack_sparse_counts, counts)
    assert fast == slow


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "empty_rows"])
def test_frame_statistics_match(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    rng = np.random.default_rng(2)
    counts = _counts(kind, rng)
    rates = rng.uniform(0, 3, counts.shape).astype(np.float32)
    fast, slow = _both(monkeypatch, pack.frame_statistics, counts, rates)
    assert fast == slow


@pytest.mark.parametrize("kind", KINDS)
def test_rice_codes_match(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    counts = _counts(kind, np.random.default_rng(3))
    fast, slow = _both(monkeypatch, pack.pack_rice_counts, counts)
    assert fast == slow


def _rice_cases(rng: np.random.Generator) -> list[np.ndarray]:
    """Arrays that reach the writer's and the planner's edges: whole-word stream ends, long unary runs
    (quotients of 64 and more), columns of mixed scale, odd widths, and values near 2^31 (row blocks of 1)."""
    cases = []
    for _ in range(40):
        rows, cols = int(rng.integers(1, 60)), int(rng.integers(1, 70))
        scales = rng.choice([0.0, 0.3, 2.0, 40.0, 3000.0], size=cols)
        cases.append(rng.geometric(1.0 / (1.0 + scales), size=(rows, cols)).astype(np.int32) - 1)
    cases.append(np.zeros((8, 8), np.int32))  # 64 one-bit codes: the quotient stream ends on a word boundary
    cases.append(np.full((1, 1), 64, np.int32))  # a 65-bit unary code at k = 0 (one column, one row)
    runs = np.zeros((3, 5), np.int32)
    runs[1, 2] = 200  # a unary run across several all-ones words in a column the planner leaves at k = 0
    cases.append(runs)
    near_top = rng.integers(0, 2**31 - 1, size=(5, 9), dtype=np.int64).astype(np.int32)
    near_top[0, 0] = 2**31 - 1
    cases.append(near_top)
    return cases


def test_rice_codes_match_on_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    for values in _rice_cases(np.random.default_rng(6)):
        fast, slow = _both(monkeypatch, pack.rice_encode, values)
        assert fast == slow, values.shape


def _rates(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "model":  # the model's range: exp(log_rate) + 1.19e-7, log_rate softly clamped below 5.3
        return (np.exp(rng.uniform(-16.5, 5.34, (1200, 512))) + 1.19e-7).astype(np.float32)
    if kind == "specials":
        rates = rng.uniform(0, 3, (64, 33)).astype(np.float32)
        rates.flat[::7] = np.nan
        rates.flat[1::11] = 0.0
        rates.flat[2::13] = -1.0
        rates.flat[3::17] = np.inf
        rates.flat[4::19] = 1e-30
        rates.flat[5::23] = 1e30
        return rates
    if kind == "one_row":
        return rng.uniform(0.01, 10, (1, 40)).astype(np.float32)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["model", "specials", "one_row"])
@pytest.mark.parametrize("wants", [(True, True), (True, False), (False, True)])
def test_rate_codes_match(monkeypatch: pytest.MonkeyPatch, kind: str, wants: tuple[bool, bool]) -> None:
    rates = _rates(kind, np.random.default_rng(4))
    fast, slow = _both(monkeypatch, pack.pack_rate_codes, rates, *wants)
    assert fast == slow


def test_rice_refuses_negative_values() -> None:
    from pvae.native.pack import load

    with pytest.raises(ValueError, match="values >= 0"):
        load().rice(np.array([[1, -1]], np.int32))


def test_rate_codes_at_every_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C kernel reads codes from thresholds and a bucket table instead of taking a log: rates exactly
    on each of the 255 thresholds, one float32 step below and above, and the bucket edges must all get
    rate_codes' code."""
    grid = pack._rate_grid()
    edges = grid.thresholds[1:-1]
    below = np.nextafter(edges, np.float32(0))
    above = np.nextafter(edges, np.float32(np.inf))
    buckets = (np.arange(0, 0x7F80, 7, dtype=np.uint32) << np.uint32(16)).view(np.float32)
    values = np.concatenate([edges, below, above, buckets, np.nextafter(buckets, np.float32(0))])
    rates = np.resize(values.astype(np.float32), (len(values) // 64 + 1, 64))
    fast, slow = _both(monkeypatch, pack.pack_rate_codes, rates, True, True)
    assert fast == slow
    from pvae.native.pack import load

    _, zigzag = load().rate_deltas(rates, grid)
    assert zigzag.shape == rates.shape


def test_rate_grid_refuses_a_map_it_cannot_hold() -> None:
    from pvae.native.pack import RateGrid

    def squeezed(rates: np.ndarray) -> np.ndarray:  # 255 codes in [1, 1.001)
        finite = np.nan_to_num(rates.astype(np.float64), nan=0.0, posinf=2.0, neginf=0.0)
        return np.clip((finite - 1.0) * 255e3, 0, 255).astype(np.uint8)

    with pytest.raises(ValueError, match="more than one code threshold"):
        RateGrid.from_codes(squeezed)
