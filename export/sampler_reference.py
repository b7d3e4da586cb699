"""The exact Poisson sampler's algorithm in numpy: the test oracle and the algorithm's constants.

:func:`poisson_reference` turns rates ``lambda`` (float32, any shape) and a seed (int64) into counts
``z ~ Poisson(lambda)`` (int32, same shape). The ONNX graph of :mod:`pvae.export.sampler` computes the
same counts bit for bit (in another order, whose cost follows the spike count); this module is the
specification it is tested against, and the home of every constant both share.

Generator
---------
Counter-based: every random word is ``squares32(counter, key)`` (Widynski 2020, "Squares: a fast
counter-based RNG", arXiv:2004.06278; 4 rounds of ``x = x*x + w`` and a 32-bit rotation on uint64). Squares
needs only uint64 multiply, add and a 32-bit rotation, and the rotation is ``x div 2**32 + x * 2**32``.
The CUDA EP implements Mul/Add/Div for uint64 but none of BitShift/BitwiseAnd/Or/Xor (ONNX Runtime
``docs/OperatorKernels.md``), so the default graph has no bitwise op at all and produces the same integer
stream on CPU and CUDA. ``shift="bitshift"`` swaps ``Div`` by ``2**s`` for ``BitShift`` (identical bits,
faster on CPU, but BitShift is CPU-only: a CUDA session would run those nodes on the CPU).

- Key: Squares keys must be *admissible* (all nibbles non-zero, the lower 8 distinct with an odd lowest
  one, the 9th different from the 8th and absent from the upper 7). :func:`derive_key` builds such a key
  from the 64-bit seed inside the graph: a 64-bit seed hash, 24 further words, an odd first nibble, a
  random 7-of-14 arrangement (TopK on the words) and offset digits. About 2**57 distinct keys.
- Counter: ``draw * 2**32 + index`` (uint64), so each element's words depend on (seed, element index,
  draw number) only. Draw 0 is shared by 4 elements (one byte each), draw 1 is an element's 24 low
  bits, draws 2 + 2j and 3 + 2j are the PTRS uniforms of rejection round j.

Algorithm (per element, rates flattened row-major, e = flat index)
------------------------------------------------------------------
1. Sanitise: ``lambda = min(rate, MAX_RATE)`` if ``rate > 0`` else 0 (NaN, -inf, negatives give 0;
   +inf and rates above ``MAX_RATE`` become ``MAX_RATE``).
2. Uniform: ``w = (A * 2**24 + B + 0.5) / 2**32`` in (0, 1), A = one byte of draw 0, B = the top 24 bits
   of draw 1; ``u = 1 - w`` (exact in float64).
3. ``lambda < SWITCH_RATE``: inversion (sequential search) in float64, ``count = min{k : u < F(k)}`` with
   ``p_0 = exp(-lambda)``, ``p_k = p_{k-1} * lambda / k`` and ``F(k) = F(k-1) + p_k``.
4. ``lambda >= SWITCH_RATE``: PTRS, Hörmann's transformed rejection with squeeze (1993), float64, with the
   constants numpy uses; log k! from a table for k < 16 and the Stirling series above.

Limits
------
- Rates are clamped to ``MAX_RATE`` (1e6): above it the counts are Poisson(1e6), not Poisson(rate).
  Checked against scipy from 1e-7 to 200 (10**6 draws per rate, on both sides of the PTRS switch and of
  the pre-screen; tests/test_sampler_onnx.py) and in the mean at 1e4 and 1e6.
- Counts are int32; no cap below ``MAX_RATE`` applies (int32 holds any count PTRS can return there).
- The uniforms have 32 bits: an inversion count k is reached with its exact probability rounded to the
  2**-32 grid, so probabilities below ~2e-10 (e.g. counts far in the tail) are not represented, and a
  rate of 1e-7 has P(count >= 1) correct to ~0.1 %.
- N*K < 2**32 (the counter holds the element index in 32 bits).
- ``MAX_INVERSION_COUNT`` / ``MAX_PTRS_ITERATIONS`` cap the loops; both caps are far beyond what 32-bit
  uniforms can reach (see the constants), so they never bind in practice.
- Graph and reference agree bit for bit in the integer stream and in every IEEE basic operation (+ - * /
  sqrt, floor, comparisons). Exp and Log may differ by one ulp between numpy, the CPU EP and the CUDA EP;
  that flips a count only if a uniform falls within ~1e-16 of a CDF value, i.e. essentially never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pvae.bundle import SAMPLER_MAX_RATE

__all__ = [
    "DEFAULT_INVERSION_BLOCK",
    "DERIVATION_KEY_A",
    "DERIVATION_KEY_B",
    "MAX_ELEMENTS",
    "MAX_INVERSION_COUNT",
    "MAX_PTRS_ITERATIONS",
    "MAX_RATE",
    "SWITCH_RATE",
    "LoopTripCounts",
    "derive_key",
    "is_admissible_key",
    "loop_trip_counts",
    "poisson_reference",
    "squares32",
]

# ----------------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------------
DEFAULT_INVERSION_BLOCK: Final = 4
"""Sequential-search steps per inversion Loop iteration (fewer iterations, i.e. CUDA syncs, vs waste)."""

SWITCH_RATE: Final = 10.0
"""Rates >= this use PTRS. Hörmann (1993) proves PTRS for mu >= 10; numpy switches at 10 too."""
MAX_RATE: Final = SAMPLER_MAX_RATE
"""Rates are clamped here (float32 1e6 is exact). The model's soft clamp is e**5.3 ~ 200."""
MAX_INVERSION_COUNT: Final = 64
"""Cap of the inversion search. With 32-bit uniforms u <= 1 - 2**-33, and for lambda < 10 the search
stops once 1 - F(k) < 2**-33, i.e. by k = 37 (P(X > 36 | lambda=10) = 4.5e-11)."""
MAX_PTRS_ITERATIONS: Final = 64
"""Cap of PTRS rounds: a proposal is rejected with probability 1 - alpha <= 0.25 (rate 10), 0.25**64 ~ 3e-39."""
MAX_ELEMENTS: Final = 2**32
"""N*K must stay below this: the counter holds the element index in its low 32 bits."""

# ----------------------------------------------------------------------------------------------------
# Generator constants
# ----------------------------------------------------------------------------------------------------
_TWO_32: Final = 2**32
_COUNTER_STRIDE: Final = _TWO_32  # counter = draw * 2**32 + index
_DRAW_HIGH_BYTE: Final = 0  # one squares32 word gives the high byte A of 4 elements
_DRAW_LOW_BITS: Final = 1  # the 24 low bits B of an element's inversion uniform
_DRAW_PTRS_FIRST: Final = 2  # PTRS round j uses draws 2 + 2j (U) and 3 + 2j (V)
_BYTES_PER_WORD: Final = 4  # elements served by one draw-0 word
_LOW_BITS: Final = 24  # bits of B; A supplies the other 8 of the 32-bit uniform

# Fixed admissible Squares keys (hand-picked digits, checked by is_admissible_key in the tests). They
# only turn the seed into a per-request key; they are not the per-request key itself.
DERIVATION_KEY_A: Final = 0x6B2D9E4F8C3A57E1
DERIVATION_KEY_B: Final = 0xD3A59C7E2F14B68D
_KEY_WORDS: Final = 24  # words used by derive_key: 1 (first nibble) + 15 (arrangement) + 1 + 7
_ODD_NIBBLES: Final = (1, 3, 5, 7, 9, 11, 13, 15)
_NIBBLES: Final = 15  # admissible nibbles are 1..15

# PTRS constants, Hörmann (1993), "The transformed rejection method for generating Poisson random
# variables", Insurance: Mathematics and Economics 12, 39-45; the values numpy's random_poisson_ptrs uses.
_PTRS_B0, _PTRS_B1 = 0.931, 2.53  # b = 0.931 + 2.53 * sqrt(lambda)
_PTRS_A0, _PTRS_A1 = -0.059, 0.02483  # a = -0.059 + 0.02483 * b
_PTRS_IA0, _PTRS_IA1, _PTRS_IA2 = 1.1239, 1.1328, 3.4  # 1/alpha = 1.1239 + 1.1328 / (b - 3.4)
_PTRS_VR0, _PTRS_VR1, _PTRS_VR2 = 0.9277, 3.6224, 2.0  # v_r = 0.9277 - 3.6224 / (b - 2)
_PTRS_SHIFT: Final = 0.43  # k = floor((2a/us + b) U + lambda + 0.43)
_PTRS_US_SQUEEZE, _PTRS_US_REJECT = 0.07, 0.013  # us thresholds of the squeeze and the quick rejection

# log k! : exact table below _LOG_FACTORIAL_TABLE, Stirling series (Abramowitz & Stegun 6.1.41) above.
# Truncation error after the x**-9 term is below 691/360360 / x**11 < 5e-17 for x = k + 1 >= 17.
_LOG_FACTORIAL_TABLE: Final = 16
_LOG_FACTORIALS: Final = np.array([math.lgamma(k + 1.0) for k in range(_LOG_FACTORIAL_TABLE)], dtype=np.float64)
_STIRLING: Final = (1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0, 1.0 / 1188.0)
_HALF_LOG_2PI: Final = 0.5 * math.log(2.0 * math.pi)
_INT32_MAX: Final = float(2**31 - 1)


# ----------------------------------------------------------------------------------------------------
# numpy side: generator, key, reference sampler
# ----------------------------------------------------------------------------------------------------
def _u64(value: npt.ArrayLike) -> np.ndarray:
    return np.asarray(value, dtype=np.uint64)


def squares32(counter: npt.ArrayLike, key: int, top_bits: int = 32) -> np.ndarray:
    """Widynski's squares32 (arXiv:2004.06278, 4 rounds) on uint64 arrays; the top ``top_bits`` bits.

    Returns uint64 values below ``2**top_bits``. All arithmetic wraps modulo 2**64, as in C.
    """
    if not 1 <= top_bits <= 32:
        raise ValueError(f"top_bits must be in [1, 32], got {top_bits}")
    ctr, k = _u64(counter), _u64(key)
    s32 = np.uint64(32)
    with np.errstate(over="ignore"):
        x = y = ctr * k  # 1. Weyl-like start: counter * key
        z = y + k
        x = x * x + y  # 2. round 1: square, add, rotate by 32
        x = (x >> s32) + (x << s32)
        x = x * x + z  # 3. round 2
        x = (x >> s32) + (x << s32)
        x = x * x + y  # 4. round 3
        x = (x >> s32) + (x << s32)
        return (x * x + z) >> np.uint64(64 - top_bits)  # 5. round 4: the upper bits of the last square


def is_admissible_key(key: int) -> bool:
    """Whether ``key`` follows the Squares key rules (see the module docstring)."""
    nibbles = [(int(key) >> (4 * i)) & 0xF for i in range(16)]
    return (
        0 not in nibbles
        and len(set(nibbles[:8])) == 8
        and nibbles[0] % 2 == 1
        and nibbles[8] != nibbles[7]
        and nibbles[8] not in nibbles[9:]
    )


def _seed_as_u64(seed: int) -> np.uint64:
    if not -(2**63) <= int(seed) < 2**63:
        raise ValueError(f"seed must fit int64, got {seed}")
    return np.uint64(int(seed) % 2**64)  # two's complement, like Cast(int64 -> uint64)


def derive_key(seed: int) -> int:
    """The admissible Squares key of a seed, exactly as the graph derives it.

    1. ``h = squares32(seed, KEY_A) * 2**32 + squares32(seed, KEY_B)`` (a 64-bit seed hash).
    2. ``r_i = squares32(h + i, KEY_A)`` for i < 24.
    3. Nibble 0 (lowest) = odd[r_0 mod 8]. Nibbles 1..7 = the 7 smallest of ``16 r_i + d`` over the
       digits d = 0..14 (i = 1 + d), digit d standing for nibble d + 1, with nibble 0 excluded.
    4. Nibble 8 = 1 + (nibble 7 + r_16 mod 14) mod 15; nibbles 9..15 = 1 + (nibble 8 + r_i mod 14) mod 15.
    """
    s = _seed_as_u64(seed)
    h_a = int(squares32(s, DERIVATION_KEY_A))
    h_b = int(squares32(s, DERIVATION_KEY_B))
    seed_hash = (h_a * _TWO_32 + h_b) % 2**64
    with np.errstate(over="ignore"):
        words = squares32(np.uint64(seed_hash) + np.arange(_KEY_WORDS, dtype=np.uint64), DERIVATION_KEY_A)
    r = words.astype(np.int64)
    first = _ODD_NIBBLES[int(r[0] % 8)]
    scores = r[1:16].astype(np.float64) * 16.0 + np.arange(_NIBBLES, dtype=np.float64)
    scores[first - 1] = 2.0**40  # exclude the first nibble from the arrangement
    lower = [first, *(int(i) + 1 for i in np.argsort(scores, kind="stable")[:7])]
    ninth = 1 + (lower[7] + int(r[16] % 14)) % _NIBBLES
    upper = [ninth, *(1 + (ninth + int(x % 14)) % _NIBBLES for x in r[17:24])]
    key = sum(d << (4 * i) for i, d in enumerate(lower)) + (sum(d << (4 * i) for i, d in enumerate(upper)) << 32)
    return key


def _sanitise(rates: np.ndarray) -> np.ndarray:
    """Step 1: float32 rates -> float32 lambda in [0, MAX_RATE] (NaN and non-positive -> 0)."""
    flat = np.asarray(rates, dtype=np.float32).reshape(-1)
    with np.errstate(invalid="ignore"):
        return np.where(flat > 0, np.minimum(flat, np.float32(MAX_RATE)), np.float32(0)).astype(np.float32)


def _inversion_uniform(n: int, key: int) -> np.ndarray:
    """Step 2: the float64 uniform u = 1 - w of every element (w = (A 2**24 + B + 0.5) / 2**32)."""
    e = np.arange(n, dtype=np.uint64)
    slots = np.uint64((n + _BYTES_PER_WORD - 1) // _BYTES_PER_WORD)  # P
    lane, slot = (e // slots, e % slots) if n else (e, e)  # e = lane * P + slot
    word = squares32(slot + np.uint64(_DRAW_HIGH_BYTE * _COUNTER_STRIDE), key)
    high = (word >> (np.uint64(24) - np.uint64(8) * lane)) & np.uint64(0xFF)  # lane j: byte 3 - j
    low = squares32(e + np.uint64(_DRAW_LOW_BITS * _COUNTER_STRIDE), key, top_bits=_LOW_BITS)
    bits = (high << np.uint64(_LOW_BITS)) + low  # < 2**32
    w = (bits.astype(np.float64) + 0.5) * 2.0**-32
    return 1.0 - w


def _inversion_counts(lam: np.ndarray, u: np.ndarray, block: int) -> tuple[np.ndarray, int]:
    """Step 3: sequential search, count = min{k: u < F(k)}; also returns the Loop iterations used."""
    p = np.exp(-lam)  # 3a. p_0 = exp(-lambda), F(0) = p_0
    s = p.copy()
    counts = (u >= s).astype(np.int32)  # 3b. count >= 1 iff u >= F(0)
    active = np.flatnonzero(u >= s)
    iterations = 0
    for it in range(math.ceil(MAX_INVERSION_COUNT / block)):
        if active.size == 0:
            break
        iterations += 1
        pa, sa, la, ua = p[active], s[active], lam[active], u[active]
        steps = np.zeros(active.size, dtype=np.int32)
        for j in range(1, block + 1):  # 3c. p_k = p_{k-1} lambda / k; F(k) = F(k-1) + p_k
            k = float(it * block + j)
            pa = pa * la / k
            sa = sa + pa
            steps += (ua >= sa).astype(np.int32)
        counts[active] = it * block + 1 + steps  # 3d. count = 1 + #{k >= 1 : u >= F(k)}
        p[active], s[active] = pa, sa
        active = active[ua >= sa]  # 3e. keep the elements whose search goes on
    return counts, iterations


def _log_factorial(k: np.ndarray) -> np.ndarray:
    """log k! for integer-valued float64 k >= 0: table below 16, Stirling series above."""
    x = k + 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series: np.ndarray | float = _STIRLING[4]
    for c in _STIRLING[3::-1]:
        series = series * inv2 + c
    stirling = (((x - 0.5) * np.log(x) - x) + _HALF_LOG_2PI) + series * inv
    table = _LOG_FACTORIALS[np.minimum(k, _LOG_FACTORIAL_TABLE - 1).astype(np.int64)]
    return np.where(k < _LOG_FACTORIAL_TABLE, table, stirling)


def _ptrs_round(lam: np.ndarray, counter: np.ndarray, key: int, round_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 4, one PTRS round for every element given: (accepted mask, proposal k as float64)."""
    draw = np.uint64((_DRAW_PTRS_FIRST + 2 * round_index) * _COUNTER_STRIDE)
    h_u = squares32(counter + draw, key).astype(np.float64)
    h_v = squares32(counter + draw + np.uint64(_COUNTER_STRIDE), key).astype(np.float64)
    uu = (h_u + 0.5) * 2.0**-32 - 0.5  # 4a. U uniform on (-1/2, 1/2), V on (0, 1)
    vv = (h_v + 0.5) * 2.0**-32
    slam, loglam = np.sqrt(lam), np.log(lam)  # 4b. Hörmann's constants
    b = _PTRS_B0 + _PTRS_B1 * slam
    a = _PTRS_A0 + _PTRS_A1 * b
    invalpha = _PTRS_IA0 + _PTRS_IA1 / (b - _PTRS_IA2)
    vr = _PTRS_VR0 - _PTRS_VR1 / (b - _PTRS_VR2)
    us = 0.5 - np.abs(uu)  # 4c. proposal
    k = np.floor((2.0 * a / us + b) * uu + lam + _PTRS_SHIFT)
    squeeze = (us >= _PTRS_US_SQUEEZE) & (vv <= vr)  # 4d. quick acceptance
    reject = (k < 0) | ((us < _PTRS_US_REJECT) & (vv > us))  # 4e. quick rejection
    kc = np.maximum(k, 0.0)
    lhs = np.log(vv) + np.log(invalpha) - np.log(a / (us * us) + b)  # 4f. full test in log space
    rhs = -lam + k * loglam - _log_factorial(kc)
    return squeeze | (~reject & (lhs <= rhs)), kc


def _ptrs_counts(lam: np.ndarray, elements: np.ndarray, key: int) -> tuple[np.ndarray, int]:
    """Step 4: PTRS rounds until every element accepted; also returns the Loop iterations used."""
    counts = np.zeros(lam.size, dtype=np.int32)
    active = np.arange(lam.size)
    counter = elements.astype(np.uint64)
    iterations = 0
    for j in range(MAX_PTRS_ITERATIONS):
        if active.size == 0:
            break
        iterations += 1
        accepted, k = _ptrs_round(lam[active], counter[active], key, j)
        counts[active] = np.minimum(k, _INT32_MAX).astype(np.int32)
        active = active[~accepted]  # 4g. rejected proposals try again with the next draws
    return counts, iterations


@dataclass(frozen=True)
class LoopTripCounts:
    """Iterations the two Loops of the sampler graph run for one input (each is a CUDA host sync)."""

    inversion: int
    """Iterations of the inversion Loop: ceil(max count among rates < SWITCH_RATE / block) or so."""
    ptrs: int
    """PTRS rounds until the last proposal is accepted (the graph runs round 0 before its Loop)."""


def _reference(rates: np.ndarray, seed: int, inversion_block: int) -> tuple[np.ndarray, LoopTripCounts]:
    """Steps 1-4 on every element (no pre-screen: it only skips work whose result is 0 anyway)."""
    lam32 = _sanitise(rates)
    n = lam32.size
    if n >= MAX_ELEMENTS:
        raise ValueError(f"rates has {n} elements; the sampler supports fewer than {MAX_ELEMENTS}")
    key = derive_key(seed)
    lam = lam32.astype(np.float64)
    counts = np.zeros(n, dtype=np.int32)
    small = np.flatnonzero(lam < SWITCH_RATE)
    large = np.flatnonzero(lam >= SWITCH_RATE)
    u = _inversion_uniform(n, key)
    counts[small], inv_iters = _inversion_counts(lam[small], u[small], inversion_block)
    counts[large], ptrs_iters = _ptrs_counts(lam[large], large, key)
    return counts.reshape(np.shape(rates)), LoopTripCounts(inversion=inv_iters, ptrs=ptrs_iters)


def poisson_reference(rates: np.ndarray, seed: int) -> np.ndarray:
    """Poisson counts of ``rates`` for ``seed``: the sampler graph's algorithm in numpy, bit for bit.

    >>> poisson_reference(np.full((2, 3), 0.5, np.float32), seed=7).dtype
    dtype('int32')
    """
    counts, _ = _reference(rates, seed, DEFAULT_INVERSION_BLOCK)
    return counts


def loop_trip_counts(rates: np.ndarray, seed: int, inversion_block: int = DEFAULT_INVERSION_BLOCK) -> LoopTripCounts:
    """How many iterations the graph's Loops run for ``rates`` and ``seed`` (from the reference)."""
    return _reference(rates, seed, inversion_block)[1]
