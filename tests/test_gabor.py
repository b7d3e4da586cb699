"""Gabor fits: high R^2 and recovered parameters on synthetic Gabors, low R^2 on noise, plane waves
are good fits but not localised."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from pvae.training.gabor import (
    ENVELOPE_FRACTION,
    GABOR_R2_THRESHOLD,
    _gabor_and_jacobian,
    fit_gabor,
    fit_gabors,
    gabor,
    summarise_gabor_fits,
)

SHAPE = (16, 16)


def _random_gabor(rng: np.random.Generator) -> np.ndarray:
    """(x0, y0, theta, sigma_x, sigma_y, frequency, phase, amplitude) of a localised 16x16 Gabor."""
    return np.array([rng.uniform(5, 11), rng.uniform(5, 11), rng.uniform(0, math.pi), rng.uniform(1.5, 2.5),
                     rng.uniform(2.0, 3.5), rng.uniform(0.12, 0.3), rng.uniform(0, 2 * math.pi), 1.0])


def test_jacobian_matches_finite_differences() -> None:
    params = np.array([7.0, 8.5, 0.7, 2.0, 3.0, 0.2, 0.4, 1.3])
    _, analytic = _gabor_and_jacobian(params, SHAPE)
    assert analytic is not None
    numeric = np.stack([approx_fprime(params, lambda p, i=i: _gabor_and_jacobian(p, SHAPE, False)[0][i], 1e-7)
                        for i in range(SHAPE[0] * SHAPE[1])])
    assert np.abs(numeric - analytic).max() < 1e-4


def test_synthetic_gabors_fit_well_and_parameters_come_back() -> None:
    rng = np.random.default_rng(0)
    for _ in range(4):
        params = _random_gabor(rng)
        noisy = gabor(params, SHAPE) + 0.03 * rng.normal(size=SHAPE)
        fit = fit_gabor(noisy)
        assert fit.r2 > 0.9
        assert fit.gabor_like
        assert fit.frequency == pytest.approx(params[5], rel=0.1)
        # Orientation is defined modulo pi (a carrier and its mirror image are the same Gabor).
        delta = (fit.theta - params[2]) % math.pi
        assert min(delta, math.pi - delta) < 0.1
        assert math.hypot(fit.x0 - params[0], fit.y0 - params[1]) < 1.0


def test_noise_fits_badly() -> None:
    rng = np.random.default_rng(1)
    fits = fit_gabors(rng.normal(size=(3, *SHAPE)))
    assert max(f.r2 for f in fits) < 0.3
    assert not any(f.gabor_like for f in fits)
    assert summarise_gabor_fits(fits)["fraction_gabor_like"] == 0.0


def test_a_plane_wave_fits_but_is_not_localised() -> None:
    ys, xs = np.mgrid[0:16, 0:16]
    fit = fit_gabor(np.cos(2 * math.pi * (0.1 * xs + 0.05 * ys)))
    assert fit.r2 > 0.95
    assert fit.envelope_narrow > ENVELOPE_FRACTION * 16
    assert not fit.gabor_like


def test_summary() -> None:
    rng = np.random.default_rng(2)
    tiles = [gabor(_random_gabor(rng), SHAPE) for _ in range(3)] + [rng.normal(size=SHAPE)]
    summary = summarise_gabor_fits(fit_gabors(np.stack(tiles)))
    assert summary["n_fitted"] == 4
    assert summary["fraction_gabor_like"] == pytest.approx(0.75)
    assert summary["r2_threshold"] == GABOR_R2_THRESHOLD
    empty = summarise_gabor_fits([])
    assert empty["n_fitted"] == 0 and math.isnan(empty["fraction_gabor_like"])


def test_flat_and_malformed_filters() -> None:
    assert fit_gabor(np.zeros(SHAPE)).r2 == 0.0
    with pytest.raises(ValueError, match="one"):
        fit_gabor(np.zeros(16))
