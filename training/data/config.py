"""Step 0 of the data flow: :class:`PatchConfig`, the validated description of how natural images
become training patches, and :data:`PIPELINE_VERSION`, which stamps the arithmetic of the whole
pipeline (cache keys, checkpoints and exported bundles record it). Every later step reads its
parameters from here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pvae.errors import ConfigError

__all__ = ["PIPELINE_VERSION", "ZSCORE_FLOOR", "PatchConfig"]

# Bump whenever the arithmetic of preprocessing, block splitting or patch sampling changes: it is
# part of the cache key, and export/serving record it next to the preprocessing they rebuild.
PIPELINE_VERSION = 2  # 2: the z-score divides by max(std, zscore_floor)

# Default floor of the z-score's divisor. After local contrast normalisation the training photographs
# have a standard deviation of 0.51-0.84 (all above it, so their patches are unchanged), while clipped
# black-and-white pictures fall to 0.28-0.46; a plain z-score would amplify those up to 3.6x, far
# outside the training range (patch energies up to 3,400 against at most ~1,000 in training).
ZSCORE_FLOOR = 0.5


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_odd(name: str, value: object, minimum: int) -> None:
    _check_int(name, value, minimum)
    assert isinstance(value, int)
    if value % 2 == 0:
        raise ConfigError(f"{name} must be odd (a centred kernel), got {value}")


def _check_float(name: str, value: object, low: float, high: float, *, inclusive_high: bool) -> None:
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    # NaN fails both comparisons, so wrong types and NaN are rejected with out-of-range values.
    if not (low < number < high or (inclusive_high and number == high)):
        bracket = "]" if inclusive_high else ")"
        raise ConfigError(f"{name} must be a number in ({low}, {high}{bracket}, got {value!r}")


@dataclass(frozen=True)
class PatchConfig:
    """How natural images become training patches. Plain data, validated on construction.

    Example::

        cfg = PatchConfig(n_patches=20_000, seed=1)
        same = PatchConfig.from_dict(cfg.to_dict())   # checkpoints store cfg.to_dict()
    """

    patch_size: int = 16
    """Side of a square patch in pixels; a patch is flattened to patch_size**2 values."""
    whiten_f0: float = 0.4
    """Scale f0 of the whitening filter R(f) = f exp(-(f/f0)^4), in cycles/pixel; in (0, 2]. 0.4 is
    Olshausen & Field's (1996) cut-off (200 cycles per 512-pixel picture) and the usual choice of
    whitening code; 0.5 (our first default) keeps 2x the power at Nyquist, mostly noise and JPEG
    artefacts, and measured 19 nats worse NELBO at equal steps (README, "Data")."""
    whiten_size: int = 15
    """Odd side of the spatial kernel that realises the whitening filter, in pixels."""
    lcn_size: int = 13
    """Odd side of the Gaussian window of local contrast normalisation, in pixels."""
    lcn_sigma: float = 2.0
    """Standard deviation of that Gaussian window, in pixels; > 0."""
    border: int = 4
    """Pixels at each image edge that no patch may touch (reflect-padding artefacts live there)."""
    n_patches: int = 100_000
    """Total number of patches, train plus validation; >= 2."""
    val_fraction: float = 0.2
    """Fraction of patches (and, approximately, of image blocks) held out for validation; in (0, 1)."""
    block_size: int = 64
    """Images are cut into block_size x block_size blocks, each wholly train or wholly validation;
    every patch lies inside one block, so block_size >= patch_size."""
    seed: int = 0
    """Seed of the block split and of patch sampling; >= 0."""
    zscore_floor: float = ZSCORE_FLOOR
    """The per-image z-score divides by max(std, zscore_floor): an image with little contrast after
    local normalisation (a clipped, black-and-white or mostly flat picture) is not amplified by more
    than 1/zscore_floor. 0 is a plain z-score (checkpoints made before this field existed)."""

    def __post_init__(self) -> None:
        _check_int("patch_size", self.patch_size, 2)
        _check_float("whiten_f0", self.whiten_f0, 0.0, 2.0, inclusive_high=True)
        _check_odd("whiten_size", self.whiten_size, 1)
        _check_odd("lcn_size", self.lcn_size, 1)
        _check_float("lcn_sigma", self.lcn_sigma, 0.0, float("inf"), inclusive_high=False)
        _check_int("border", self.border, 0)
        _check_int("n_patches", self.n_patches, 2)
        _check_float("val_fraction", self.val_fraction, 0.0, 1.0, inclusive_high=False)
        _check_int("block_size", self.block_size, self.patch_size)
        _check_int("seed", self.seed, 0)
        if not (isinstance(self.zscore_floor, int | float) and 0.0 <= self.zscore_floor <= 10.0):
            raise ConfigError(f"zscore_floor must be in [0, 10], got {self.zscore_floor!r}")
        # Store floats as floats, so that PatchConfig(lcn_sigma=2) and PatchConfig(lcn_sigma=2.0)
        # compare, serialise and hash (cache key) identically.
        for name in ("whiten_f0", "lcn_sigma", "val_fraction", "zscore_floor"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def dim(self) -> int:
        """Number of values in one flattened patch."""
        return self.patch_size * self.patch_size

    @property
    def min_image_size(self) -> int:
        """Smallest image side the pipeline accepts: one patch plus its borders, and more than the
        half-width of each kernel (reflect padding needs the image to be wider than the pad)."""
        half_kernel = max(self.whiten_size, self.lcn_size) // 2
        return max(self.patch_size + 2 * self.border, half_kernel + 1)

    def to_dict(self) -> dict[str, int | float]:
        """A JSON-ready dict of every field; :meth:`from_dict` inverts it exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatchConfig:
        """Rebuild a config from :meth:`to_dict` output. Unknown keys are a :class:`ConfigError`;
        missing keys take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown PatchConfig field(s) {unknown}; known fields are {sorted(known)}")
        # Configs written before zscore_floor existed used a plain z-score: keep them exactly as they were.
        return cls(**{"zscore_floor": 0.0, **dict(data)})

