"""How Gabor-like a set of basis vectors is: a 2-D Gabor fit per filter and its quality (R^2).

    >>> fits = fit_gabors(phi_tiles)            # (N, h, w) basis vectors -> list[GaborFit]
    >>> summary = summarise_gabor_fits(fits)    # fraction Gabor-like (localised, oriented), median R^2, ...

A Gabor is a plane wave under a Gaussian envelope (Jones & Palmer 1987):

    g(x, y) = A exp(-(x'^2 / (2 sx^2) + y'^2 / (2 sy^2))) cos(2 pi f x' + phase)
    x' =  (x - x0) cos(theta) + (y - y0) sin(theta)
    y' = -(x - x0) sin(theta) + (y - y0) cos(theta)

Each filter is fitted by least squares (``scipy.optimize.least_squares``, analytic Jacobian) from four
starts: the carrier frequency and orientation come from the peak of the filter's power spectrum, the
envelope's centre from the peak of its local energy, and the phase (even, odd) and the envelope width
(narrow, wide) are varied. The quality of the fit is its R^2, the fraction of the filter's variance
(about its mean) that the Gabor explains.

A good fit alone does not make a filter "localised": a global sinusoid or plaid (what PCA of natural
images gives) is also fitted by a Gabor whose envelope is wider than the patch in every direction. So a
filter counts as **Gabor-like** (localised and oriented) when R^2 >= :data:`GABOR_R2_THRESHOLD` *and*
the envelope's narrow axis is short: min(sx, sy) <= :data:`ENVELOPE_FRACTION` x the patch side. The
narrow axis is the one that matters: an edge or bar detector is short across its orientation and may
run the length of the patch along it (natural photographs of bricks and buildings favour such long
edges), whereas a plane wave is wide both ways.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "ENVELOPE_FRACTION",
    "GABOR_R2_THRESHOLD",
    "GaborFit",
    "fit_gabor",
    "fit_gabors",
    "gabor",
    "summarise_gabor_fits",
]

#: A fit explaining at least this fraction of a filter's variance counts as Gabor-shaped. Our choice
#: (the paper shows the filters, it gives no number); 0.5 means the Gabor explains most of the filter.
GABOR_R2_THRESHOLD = 0.5
#: "Localised": the envelope's narrow-axis standard deviation is at most this fraction of the patch side
#: (4 px on a 16x16 patch, so +-2 sigma spans at most half the patch). Our choice, stated in the report.
ENVELOPE_FRACTION = 0.25
#: Carrier phases tried as starting points (radians): even and odd; the amplitude's sign covers the rest.
START_PHASES = (0.0, math.pi / 2)
#: Envelope widths tried as starting points, as fractions of the patch side.
START_SIGMAS = (0.12, 0.3)
#: Function evaluations allowed per start (8 parameters; a good start converges in ~20-40).
MAX_EVALUATIONS = 200
#: Smallest envelope standard deviation in pixels (narrower envelopes fit single pixels of noise).
MIN_SIGMA = 0.5
#: Highest carrier frequency, cycles/pixel (Nyquist).
MAX_FREQUENCY = 0.5


@dataclass(frozen=True)
class GaborFit:
    """The best Gabor for one filter; pixel units, (x, y) = (column, row) from the top-left pixel."""

    r2: float
    """Fraction of the filter's variance (about its mean) that the fitted Gabor explains."""
    x0: float
    y0: float
    theta: float
    """Orientation of the carrier's wave vector, radians."""
    sigma_x: float
    """Envelope std along the wave vector, pixels."""
    sigma_y: float
    """Envelope std across the wave vector, pixels."""
    frequency: float
    """Carrier frequency, cycles/pixel."""
    phase: float
    amplitude: float
    side: int
    """The larger side of the filter, pixels (what :data:`ENVELOPE_FRACTION` is relative to)."""

    @property
    def envelope_narrow(self) -> float:
        """The envelope's smaller standard deviation, pixels."""
        return min(self.sigma_x, self.sigma_y)

    @property
    def envelope_long(self) -> float:
        """The envelope's larger standard deviation, pixels."""
        return max(self.sigma_x, self.sigma_y)

    @property
    def gabor_like(self) -> bool:
        """R^2 >= GABOR_R2_THRESHOLD and a narrow envelope axis <= ENVELOPE_FRACTION x side."""
        return self.r2 >= GABOR_R2_THRESHOLD and self.envelope_narrow <= ENVELOPE_FRACTION * self.side

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "envelope_narrow": self.envelope_narrow, "envelope_long": self.envelope_long,
                "gabor_like": self.gabor_like}


def gabor(params: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The Gabor (h, w) for params (x0, y0, theta, sigma_x, sigma_y, frequency, phase, amplitude)."""
    return _gabor_and_jacobian(params, shape, jacobian=False)[0].reshape(shape)


def _gabor_and_jacobian(
    params: np.ndarray, shape: tuple[int, int], jacobian: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The flattened Gabor (h*w,) and, if asked, its analytic Jacobian (h*w, 8) in the params."""
    x0, y0, theta, sx, sy, freq, phase, amp = (float(v) for v in params)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    dx, dy = (xs - x0).ravel(), (ys - y0).ravel()
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    xr = dx * cos_t + dy * sin_t  # (h*w,) coordinate along the wave vector
    yr = -dx * sin_t + dy * cos_t  # (h*w,) coordinate across it
    envelope = np.exp(-(xr**2 / (2 * sx**2) + yr**2 / (2 * sy**2)))
    arg = 2 * math.pi * freq * xr + phase
    carrier, quadrature = np.cos(arg), np.sin(arg)
    value = amp * envelope * carrier
    if not jacobian:
        return value, None
    d_xr = amp * envelope * (-xr / sx**2 * carrier - 2 * math.pi * freq * quadrature)  # dg/dxr
    d_yr = value * (-yr / sy**2)  # dg/dyr
    jac = np.stack([
        -d_xr * cos_t + d_yr * sin_t,  # x0
        -d_xr * sin_t - d_yr * cos_t,  # y0
        d_xr * yr - d_yr * xr,  # theta
        value * xr**2 / sx**3,  # sigma_x
        value * yr**2 / sy**3,  # sigma_y
        -amp * envelope * quadrature * 2 * math.pi * xr,  # frequency
        -amp * envelope * quadrature,  # phase
        envelope * carrier,  # amplitude
    ], axis=1)
    return value, jac


def _spectral_start(tile: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, theta, frequency) from the power spectrum's peak and the local energy's peak."""
    h, w = tile.shape
    power = np.abs(np.fft.fft2(tile - tile.mean())) ** 2  # (h, w)
    fy = np.fft.fftfreq(h)[:, None] * np.ones((1, w))
    fx = np.ones((h, 1)) * np.fft.fftfreq(w)[None, :]
    peak = np.unravel_index(int(np.argmax(power)), power.shape)
    kx, ky = float(fx[peak]), float(fy[peak])
    frequency = math.hypot(kx, ky)
    theta = math.atan2(ky, kx)
    # Local energy: the squared filter blurred by a 3x3 box, so the centre sits on the envelope, not a lobe.
    energy = tile**2
    padded = np.pad(energy, 1, mode="edge")
    blurred = np.zeros_like(energy)
    for dy in range(3):
        for dx in range(3):
            blurred += padded[dy:dy + h, dx:dx + w]
    cy, cx = np.unravel_index(int(np.argmax(blurred)), blurred.shape)
    return float(cx), float(cy), theta, frequency


def fit_gabor(tile: np.ndarray) -> GaborFit:
    """The best Gabor fit of one filter (h, w) over a few starting points."""
    tile = np.asarray(tile, dtype=np.float64)
    if tile.ndim != 2:
        raise ValueError(f"fit_gabor expects one (h, w) filter, got shape {tile.shape}")
    h, w = tile.shape
    side = max(h, w)
    target = tile.ravel()
    total = float(((target - target.mean()) ** 2).sum())
    if total <= 0.0:
        return GaborFit(0.0, w / 2, h / 2, 0.0, float(side), float(side), 0.0, 0.0, 0.0, side)
    x0, y0, theta, freq = _spectral_start(tile)
    amp = float(np.abs(tile).max())
    lower = np.array([-2.0, -2.0, -4 * math.pi, MIN_SIGMA, MIN_SIGMA, 0.0, -4 * math.pi, -10 * amp])
    upper = np.array([w + 1.0, h + 1.0, 4 * math.pi, 2.0 * side, 2.0 * side, MAX_FREQUENCY, 4 * math.pi, 10 * amp])

    def residual(p: np.ndarray) -> np.ndarray:
        return _gabor_and_jacobian(p, (h, w), jacobian=False)[0] - target

    def jacobian(p: np.ndarray) -> np.ndarray:
        jac = _gabor_and_jacobian(p, (h, w))[1]
        assert jac is not None
        return jac

    best_cost, best_params = math.inf, None
    for sigma_fraction in START_SIGMAS:
        sigma = max(MIN_SIGMA * 2, sigma_fraction * side)
        for phase in START_PHASES:
            start = np.clip(np.array([x0, y0, theta, sigma, sigma, freq, phase, amp]), lower + 1e-9, upper - 1e-9)
            result = least_squares(residual, start, jac=jacobian, bounds=(lower, upper),
                                   max_nfev=MAX_EVALUATIONS)
            if result.cost < best_cost:
                best_cost, best_params = float(result.cost), result.x
    assert best_params is not None  # at least one start ran
    r2 = 1.0 - 2.0 * best_cost / total  # least_squares' cost is half the sum of squared residuals
    x0f, y0f, thf, sxf, syf, ff, phf, af = (float(v) for v in best_params)
    return GaborFit(r2=max(r2, 0.0), x0=x0f, y0=y0f, theta=thf, sigma_x=sxf, sigma_y=syf, frequency=ff,
                    phase=phf, amplitude=af, side=side)


def fit_gabors(tiles: np.ndarray | Sequence[np.ndarray]) -> list[GaborFit]:
    """Gabor fits of each filter in ``tiles`` (N, h, w)."""
    return [fit_gabor(np.asarray(t)) for t in tiles]


def summarise_gabor_fits(fits: Sequence[GaborFit]) -> dict[str, float]:
    """Fraction Gabor-like, fraction with R^2 >= threshold, R^2 median/mean and median envelope axes."""
    summary = {"n_fitted": float(len(fits)), "r2_threshold": GABOR_R2_THRESHOLD,
               "envelope_fraction": ENVELOPE_FRACTION}
    if not fits:
        nan = math.nan
        return {**summary, "fraction_gabor_like": nan, "fraction_r2_above": nan, "median_r2": nan,
                "mean_r2": nan, "median_envelope_narrow_px": nan, "median_envelope_long_px": nan}
    r2 = np.array([f.r2 for f in fits])
    return {
        **summary,
        "fraction_gabor_like": float(np.mean([f.gabor_like for f in fits])),
        "fraction_r2_above": float(np.mean(r2 >= GABOR_R2_THRESHOLD)),
        "median_r2": float(np.median(r2)),
        "mean_r2": float(r2.mean()),
        "median_envelope_narrow_px": float(np.median([f.envelope_narrow for f in fits])),
        "median_envelope_long_px": float(np.median([f.envelope_long for f in fits])),
    }
