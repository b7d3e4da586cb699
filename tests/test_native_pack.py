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
