"""Exact Poisson spike counts as a standard-ops ONNX graph, seeded per request.

The sampler turns rates ``lambda`` (float32, shape ``(N, K)``, N and K dynamic) and a seed (int64 scalar)
into counts ``z ~ Poisson(lambda)`` (int32, same shape). It uses only standard ``ai.onnx`` ops (no custom
operator), so one ``.onnx`` file runs on any ONNX Runtime host. The generator, the algorithm, its
constants and its limits are specified in :mod:`pvae.export.sampler_reference`, whose
:func:`poisson_reference` is the same algorithm in numpy, bit for bit, and serves as the test oracle
(its public names are re-exported here).

Graph
-----
The graph computes exactly that, but in an order whose cost follows the work the bytes A leave open:

a. The byte A of every element: one ``squares32`` per 4 elements (draw 0), as exact float32 integers.
b. Dense screen on all N*K elements, float32, from A alone: ``w * 256`` lies in the bin (A, A + 1)
   whatever B is, so the first ``_DENSE_STEPS`` (4) sequential-search steps, in float32 with a rigorous
   margin (proof in ``_emit_dense_screen``), prove the count of every element whose bin holds none of
   its CDF values and whose count is below 4: 96 % of the bundled model's real rates, and all but 1/256
   when lambda << 1. The rest (a CDF value near its bin, count >= 4, lambda >= SWITCH_RATE)
   is compacted (``Compress`` of an index range, then ``GatherElements``, both much faster on the CPU
   EP than ``NonZero`` + ``Gather``); B is drawn for them only.
c. Exact inversion (float64, step 3) of those in a ``Loop`` that advances ``inversion_block`` steps per
   iteration and keeps only the still running elements. PTRS: round 0 on every large rate, then a
   ``Loop`` that keeps only the rejected elements; inside a round only the proposals that neither the
   squeeze accepts nor the quick test rejects (~30 %) reach the logs.
d. ``ScatterElements`` of their counts into the counts of step b.

The order changes no count: each element's uniforms come from its own counters, and step b decides an
element only when every float64 value the reference compares its uniform with lies on a proven side.

Cost model
----------
Dense part: 20 uint64 ops on N*K/4 words, ~35 float32/bool passes over N*K elements (the screen) and one
compaction (``Compress``) over N*K. Exact part: proportional to the M elements the screen leaves,
M ~ N*K / 256 (A = 0) + ~1/256 per CDF value above 1/256 + #(count >= 4) + #(lambda >= 10) (3.6 % of
N*K for the bundled model's real rates; all of them at rate 200). Inversion Loop: ceil(max count /
inversion_block) iterations (4 for sparse codes like the model's, at most 10 for rates < 10). PTRS: until
every proposal is accepted; a round accepts with probability alpha (0.75 at rate 10, 0.86 at 200), so
about 1 + ln(#large) / ln(1 / (1 - alpha)) rounds (7 for 614,400 elements at rate 200). On CUDA every
compaction (``Compress``) and every Loop condition is a device-to-host sync: 4 before the Loops, 2 per
inversion iteration and 3 per PTRS round (18 for sparse codes like the model's, 25 at rate 200).

Usage::

    model = build_sampler_model()                      # rates, seed -> counts
    combined = append_sampler(rate_model, rates_name="rates")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from pvae.export.sampler_reference import (
    _BYTES_PER_WORD,
    _COUNTER_STRIDE,
    _DRAW_LOW_BITS,
    _DRAW_PTRS_FIRST,
    _HALF_LOG_2PI,
    _INT32_MAX,
    _KEY_WORDS,
    _LOG_FACTORIAL_TABLE,
    _LOG_FACTORIALS,
    _LOW_BITS,
    _NIBBLES,
    _ODD_NIBBLES,
    _PTRS_A0,
    _PTRS_A1,
    _PTRS_B0,
    _PTRS_B1,
    _PTRS_IA0,
    _PTRS_IA1,
    _PTRS_IA2,
    _PTRS_SHIFT,
    _PTRS_US_REJECT,
    _PTRS_US_SQUEEZE,
    _PTRS_VR0,
    _PTRS_VR1,
    _PTRS_VR2,
    _STIRLING,
    _TWO_32,
    DEFAULT_INVERSION_BLOCK,
    DERIVATION_KEY_A,
    DERIVATION_KEY_B,
    MAX_ELEMENTS,
    MAX_INVERSION_COUNT,
    MAX_PTRS_ITERATIONS,
    MAX_RATE,
    SWITCH_RATE,
    LoopTripCounts,
    derive_key,
    is_admissible_key,
    loop_trip_counts,
    poisson_reference,
    squares32,
)

__all__ = [
    "COUNTS_OUTPUT",
    "DEFAULT_INVERSION_BLOCK",
    "DEFAULT_OPSET",
    "DERIVATION_KEY_A",
    "DERIVATION_KEY_B",
    "MAX_ELEMENTS",
    "MAX_INVERSION_COUNT",
    "MAX_PTRS_ITERATIONS",
    "MAX_RATE",
    "RATES_INPUT",
    "SEED_INPUT",
    "SWITCH_RATE",
    "LoopTripCounts",
    "SamplerParts",
    "ShiftMode",
    "append_sampler",
    "build_sampler_model",
    "derive_key",
    "is_admissible_key",
    "loop_trip_counts",
    "poisson_reference",
    "sampler_parts",
    "squares32",
]

# ----------------------------------------------------------------------------------------------------
# Public names and limits
# ----------------------------------------------------------------------------------------------------
RATES_INPUT: Final = "rates"
"""Graph input: float32 rates lambda >= 0, shape (N, K), N and K dynamic (``sampler_parts``: any rank)."""
SEED_INPUT: Final = "seed"
"""Graph input: int64 scalar (shape []), the per-request seed. Any value is valid."""
COUNTS_OUTPUT: Final = "counts"
"""Graph output: int32 Poisson counts, the shape of ``rates``."""

DEFAULT_OPSET: Final = 18
"""ai.onnx opset of the standalone model: 18 is the lowest with Split(num_outputs) and ScatterElements-18."""

ShiftMode = Literal["div", "bitshift"]
"""How the graph shifts uint64 right: ``Div`` by a power of two (CPU and CUDA EP) or ``BitShift`` (CPU EP
only). Both give identical bits."""

# ----------------------------------------------------------------------------------------------------
# Graph-only constants
# ----------------------------------------------------------------------------------------------------
# Dense screen (float32, bin units of 2**-8 in w; proof in _emit_dense_screen): sequential-search steps
# decided from the byte A alone, and the margin that covers float32 rounding and exp's error.
_DENSE_STEPS: Final = 4
_DENSE_MARGIN: Final = 2.0**-5


# ----------------------------------------------------------------------------------------------------
# Graph side
# ----------------------------------------------------------------------------------------------------
class _Graph:
    """Nodes of one (sub)graph; constants go to the shared top-level initializer list."""

    def __init__(
        self,
        prefix: str,
        counter: list[int],
        initializers: list[TensorProto],
        constants: dict[tuple[str, bytes, tuple[int, ...]], str],
    ) -> None:
        self.prefix = prefix
        self._counter = counter
        self.initializers = initializers
        self._constants = constants
        self.nodes: list[onnx.NodeProto] = []

    def sub(self) -> _Graph:
        """A graph for a Loop body that shares names and constants with this one."""
        return _Graph(self.prefix, self._counter, self.initializers, self._constants)

    def name(self, hint: str) -> str:
        self._counter[0] += 1
        return f"{self.prefix}{hint}_{self._counter[0]}"

    def const(self, value: npt.ArrayLike, dtype: npt.DTypeLike) -> str:
        array: np.ndarray = np.asarray(value, dtype=dtype)
        cache_key = (array.dtype.str, array.tobytes(), array.shape)
        if cache_key not in self._constants:
            name = self.name("c")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[cache_key] = name
        return self._constants[cache_key]

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        return self.ops(op_type, *inputs, n_out=1, hint=hint, **attrs)[0]

    def ops(self, op_type: str, *inputs: str, n_out: int, hint: str | None = None, **attrs: Any) -> list[str]:
        outputs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=self.name(op_type), **attrs))
        return outputs


def _shr(g: _Graph, x: str, bits: int, shift: ShiftMode) -> str:
    """uint64 x >> bits: Div by 2**bits (portable) or BitShift (CPU EP only); the same bits."""
    if shift == "bitshift":
        return g.op("BitShift", x, g.const(bits, np.uint64), direction="RIGHT")
    return g.op("Div", x, g.const(2**bits, np.uint64))


def _squares32_graph(g: _Graph, counter: str, key: str, shift: ShiftMode, top_bits: int = 32) -> str:
    """squares32 as uint64 graph ops; see :func:`squares32` for the numbered steps."""
    two32 = g.const(_TWO_32, np.uint64)

    def rotate(v: str) -> str:  # (v >> 32) + (v << 32); the halves do not overlap, so + is |
        return g.op("Add", _shr(g, v, 32, shift), g.op("Mul", v, two32))

    y = g.op("Mul", counter, key)
    z = g.op("Add", y, key)
    x = rotate(g.op("Add", g.op("Mul", y, y), y))
    x = rotate(g.op("Add", g.op("Mul", x, x), z))
    x = rotate(g.op("Add", g.op("Mul", x, x), y))
    return _shr(g, g.op("Add", g.op("Mul", x, x), z), 64 - top_bits, shift)


def _derive_key_graph(g: _Graph, seed: str, shift: ShiftMode) -> str:
    """uint64 scalar key from the int64 seed; mirrors :func:`derive_key` step by step."""
    i64 = np.int64
    seed_u = g.op("Cast", seed, to=TensorProto.UINT64)  # ()
    keys_ab = g.const([DERIVATION_KEY_A, DERIVATION_KEY_B], np.uint64)
    h_ab = _squares32_graph(g, seed_u, keys_ab, shift)  # (2,)
    h_a = g.op("Gather", h_ab, g.const(0, i64), axis=0)
    h_b = g.op("Gather", h_ab, g.const(1, i64), axis=0)
    seed_hash = g.op("Add", g.op("Mul", h_a, g.const(_TWO_32, np.uint64)), h_b)  # ()
    counters = g.op("Add", seed_hash, g.const(np.arange(_KEY_WORDS), np.uint64))  # (24,)
    words = _squares32_graph(g, counters, g.const(DERIVATION_KEY_A, np.uint64), shift)
    r = g.op("Cast", words, to=TensorProto.INT64)  # (24,) all < 2**32

    def part(start: int, stop: int) -> str:
        return g.op("Slice", r, g.const([start], i64), g.const([stop], i64), g.const([0], i64))

    first_index = g.op("Mod", g.op("Gather", r, g.const(0, i64), axis=0), g.const(8, i64))
    first = g.op("Gather", g.const(_ODD_NIBBLES, i64), first_index, axis=0)  # ()
    digits = g.const(np.arange(_NIBBLES), np.float64)
    scores = g.op(
        "Add", g.op("Mul", g.op("Cast", part(1, 16), to=TensorProto.DOUBLE), g.const(16.0, np.float64)), digits
    )  # (15,)
    is_first = g.op("Equal", g.const(np.arange(1, _NIBBLES + 1), i64), first)
    scores = g.op("Where", is_first, g.const(2.0**40, np.float64), scores)
    _, order = g.ops("TopK", scores, g.const([7], i64), n_out=2, largest=0, sorted=1)
    lower_rest = g.op("Add", order, g.const(1, i64))  # (7,)
    seventh = g.op("Gather", lower_rest, g.const(6, i64), axis=0)

    def offset_digit(base: str, word: str) -> str:  # 1 + (base + word mod 14) mod 15, never == base
        shifted = g.op("Add", base, g.op("Mod", word, g.const(14, i64)))
        return g.op("Add", g.op("Mod", shifted, g.const(_NIBBLES, i64)), g.const(1, i64))

    ninth = offset_digit(seventh, g.op("Gather", r, g.const(16, i64), axis=0))
    upper_rest = offset_digit(ninth, part(17, 24))  # (7,)
    axis0 = g.const([0], i64)
    lower = g.op("Concat", g.op("Unsqueeze", first, axis0), lower_rest, axis=0)  # (8,)
    upper = g.op("Concat", g.op("Unsqueeze", ninth, axis0), upper_rest, axis=0)  # (8,)
    powers = g.const([16**i for i in range(8)], i64)

    def assemble(nibbles: str) -> str:
        value = g.op("ReduceSum", g.op("Mul", nibbles, powers), axis0, keepdims=0)
        return g.op("Cast", value, to=TensorProto.UINT64)

    return g.op("Add", g.op("Mul", assemble(upper), g.const(_TWO_32, np.uint64)), assemble(lower))


def _flat_nonzero(g: _Graph, mask: str) -> str:
    """int64 indices (M,) of the true entries of a 1-D bool mask; one host sync on CUDA.

    ``Compress(arange, mask)`` rather than ``NonZero``: the same result, 1.5-3x faster on the CPU EP.
    """
    i64 = np.int64
    arange = g.op("Range", g.const(0, i64), g.op("Size", mask), g.const(1, i64))
    return g.op("Compress", arange, mask, axis=0)


def _take(g: _Graph, data: str, indices: str) -> str:
    """``data[indices]`` for 1-D tensors. GatherElements: ~10x faster than Gather on the CPU EP."""
    return g.op("GatherElements", data, indices, axis=0)


def _emit_high_bytes(g: _Graph, n: str, key: str, shift: ShiftMode) -> str:
    """Step a: element e's byte A (float32, an exact integer 0..255), shape (n,).

    With P = ceil(n / 4), element e = lane * P + slot takes byte 3 - lane of ``squares32(slot, key)``
    (draw 0). Lane j >= 1: the uint32 ``word * 2**(8j)`` (wrapping) has A on top and 8j zero bits below,
    so it is exact in float32 and A = floor(float32(.) 2**-24). Lane 0 (32 significant bits) goes
    through float64, where the word is exact.
    """
    i64 = np.int64
    words = np.int64(_BYTES_PER_WORD)
    slots = g.op("Div", g.op("Add", n, g.const([words - 1], i64)), g.const([words], i64))  # (1,) P
    counter = g.op(
        "Cast",
        g.op("Range", g.const(0, i64), g.op("Squeeze", slots, g.const([0], i64)), g.const(1, i64)),
        to=TensorProto.UINT64,
    )  # (P,); draw 0 adds nothing
    word = g.op("Cast", _squares32_graph(g, counter, key, shift), to=TensorProto.UINT32)  # (P,)
    top = g.op("Floor", g.op("Mul", g.op("Cast", word, to=TensorProto.DOUBLE), g.const(2.0**-24, np.float64)))
    lane_list = [g.op("Cast", top, to=TensorProto.FLOAT)]
    for j in range(1, _BYTES_PER_WORD):  # lanes stacked plane-major: element e = lane * P + slot
        shifted = g.op("Cast", g.op("Mul", word, g.const(2 ** (8 * j), np.uint32)), to=TensorProto.FLOAT)
        lane_list.append(g.op("Floor", g.op("Mul", shifted, g.const(2.0**-24, np.float32))))
    return g.op("Slice", g.op("Concat", *lane_list, axis=0), g.const([0], i64), n)  # (n,)


def _emit_dense_screen(g: _Graph, lam: str, a: str) -> tuple[str, str]:
    """Step b: (int32 counts (n,), bool ``exact`` (n,)) from the byte A alone, for every element.

    The count is ``#{k >= 0 : w <= c_k}`` with ``c_k = 1 - F(k)`` (the reference's float64 CDF, step 3),
    and ``w * 256`` lies in the open bin (A, A + 1) whatever the 24 low bits B are. In bin units
    (``C_k = 256 c_k``, float32: ``P_0 = exp(ln 256 - lambda)``, ``P_k = P_{k-1} * lambda * (1/k)``,
    ``C_k = C_{k-1} - P_k``, ``C_0 = 256 - P_0``), for k < _DENSE_STEPS: ``C_k >= A + 1 + margin`` proves
    the indicator true, ``C_k < A - margin`` proves it false. An element whose indicators are all proven
    and whose last one is false has count = the number proven true; every other element (a c_k within the
    margin of its bin, a count >= _DENSE_STEPS, lambda >= SWITCH_RATE) is flagged ``exact`` and recomputed
    by steps c-d.
    Error bound (bin units): float32 exp within 64 ulp (2**-18 relative, far above ONNX Runtime's CPU
    and CUDA kernels), the argument's rounding (<= 6 2**-24 relative for lambda < 10), three roundings
    per step (2**-24 relative each) on P_k, and one absolute rounding (<= 2**-16) per C_k: in all below
    256 (2**-18 + 2**-21 + 12 2**-24) + 4 2**-16 < 2**-9, and the float64 reference's own error is
    ~1e-13; _DENSE_MARGIN = 2**-5 covers it 16 times. NaN lambda fails every comparison (count 0, not
    exact), as the reference gives 0.
    """
    f32 = np.float32
    hi = g.op("Add", a, g.const(1.0 + _DENSE_MARGIN, f32))
    lo = g.op("Sub", a, g.const(_DENSE_MARGIN, f32))
    p = g.op("Exp", g.op("Sub", g.const(math.log(256.0), f32), lam))  # P_0 = 256 exp(-lambda)
    c = g.op("Sub", g.const(256.0, f32), p)  # C_0
    sure_count: str | None = None
    unsure: str | None = None
    maybe = ""
    for k in range(_DENSE_STEPS):
        if k:
            p = g.op("Mul", p, lam)
            if k > 1:
                p = g.op("Mul", p, g.const(1.0 / k, f32))
            c = g.op("Sub", c, p)
        sure = g.op("GreaterOrEqual", c, hi)
        maybe = g.op("GreaterOrEqual", c, lo)
        open_k = g.op("And", maybe, g.op("Not", sure))  # c_k may be on either side of w
        unsure = open_k if unsure is None else g.op("Or", unsure, open_k)
        step = g.op("Cast", sure, to=TensorProto.FLOAT)
        sure_count = step if sure_count is None else g.op("Add", sure_count, step)
    assert sure_count is not None and unsure is not None  # _DENSE_STEPS >= 1
    large = g.op("GreaterOrEqual", lam, g.const(SWITCH_RATE, f32))
    exact = g.op("Or", g.op("Or", unsure, maybe), large)  # maybe (of the last step): count >= steps
    return g.op("Cast", sure_count, to=TensorProto.INT32), exact


def _emit_inversion_loop(g: _Graph, lam: str, u: str, block: int) -> str:
    """Step c (inversion): float64 lam, u of the small-rate candidates (Ms,) -> int32 counts (Ms,)."""
    i64, f64 = np.int64, np.float64
    p0 = g.op("Exp", g.op("Neg", lam))  # 3a.
    running = g.op("GreaterOrEqual", u, p0)  # 3b. count >= 1
    counts0 = g.op("Cast", running, to=TensorProto.INT32)
    pos = _flat_nonzero(g, running)
    state0 = [pos] + [_take(g, t, pos) for t in (lam, u, p0, p0)]
    cond0 = g.op("Greater", g.op("Size", pos), g.const(0, i64))

    body = g.sub()
    names = {k: body.name(f"inv_{k}") for k in ("iter", "cond", "pos", "lam", "u", "p", "s", "counts")}
    base = body.op("Mul", body.op("Cast", names["iter"], to=TensorProto.DOUBLE), body.const(float(block), f64))
    p, s = names["p"], names["s"]
    steps: str | None = None
    for j in range(1, block + 1):  # 3c. unrolled: k = iter * block + j
        k = body.op("Add", base, body.const(float(j), f64))
        p = body.op("Div", body.op("Mul", p, names["lam"]), k)
        s = body.op("Add", s, p)
        ge = body.op("GreaterOrEqual", names["u"], s)
        step = body.op("Cast", ge, to=TensorProto.INT32)
        steps = step if steps is None else body.op("Add", steps, step)
    assert steps is not None  # block >= 1
    first_k = body.op(
        "Cast",
        body.op("Add", body.op("Mul", names["iter"], body.const(block, i64)), body.const(1, i64)),
        to=TensorProto.INT32,
    )
    count = body.op("Add", first_k, steps)  # 3d.
    counts = body.op("ScatterElements", names["counts"], names["pos"], count, axis=0)
    keep = _flat_nonzero(body, ge)  # 3e. still searching after the last step
    out_state = [_take(body, t, keep) for t in (names["pos"], names["lam"], names["u"], p, s)]
    cond = body.op("Greater", body.op("Size", keep), body.const(0, i64))
    body_graph = _make_graph(
        body,
        inputs=[
            (names["iter"], TensorProto.INT64, []),
            (names["cond"], TensorProto.BOOL, []),
            (names["pos"], TensorProto.INT64, [None]),
            (names["lam"], TensorProto.DOUBLE, [None]),
            (names["u"], TensorProto.DOUBLE, [None]),
            (names["p"], TensorProto.DOUBLE, [None]),
            (names["s"], TensorProto.DOUBLE, [None]),
            (names["counts"], TensorProto.INT32, [None]),
        ],
        outputs=[
            (cond, TensorProto.BOOL, []),
            (out_state[0], TensorProto.INT64, [None]),
            (out_state[1], TensorProto.DOUBLE, [None]),
            (out_state[2], TensorProto.DOUBLE, [None]),
            (out_state[3], TensorProto.DOUBLE, [None]),
            (out_state[4], TensorProto.DOUBLE, [None]),
            (counts, TensorProto.INT32, [None]),
        ],
        name=g.name("inversion_body"),
    )
    trip = g.const(math.ceil(MAX_INVERSION_COUNT / block), i64)
    outs = g.ops("Loop", trip, cond0, *state0, counts0, n_out=6, body=body_graph)
    return outs[-1]


def _emit_log_factorial(g: _Graph, kc: str) -> str:
    """log kc! for integer-valued float64 kc >= 0; mirrors :func:`_log_factorial`."""
    f64 = np.float64
    x = g.op("Add", kc, g.const(1.0, f64))
    inv = g.op("Div", g.const(1.0, f64), x)
    inv2 = g.op("Mul", inv, inv)
    series = g.const(_STIRLING[4], f64)
    for c in _STIRLING[3::-1]:
        series = g.op("Add", g.op("Mul", series, inv2), g.const(c, f64))
    head = g.op("Sub", g.op("Mul", g.op("Sub", x, g.const(0.5, f64)), g.op("Log", x)), x)
    stirling = g.op("Add", g.op("Add", head, g.const(_HALF_LOG_2PI, f64)), g.op("Mul", series, inv))
    table_index = g.op("Cast", g.op("Min", kc, g.const(float(_LOG_FACTORIAL_TABLE - 1), f64)), to=TensorProto.INT64)
    table = _take(g, g.const(_LOG_FACTORIALS, f64), table_index)
    return g.op("Where", g.op("Less", kc, g.const(float(_LOG_FACTORIAL_TABLE), f64)), table, stirling)


def _emit_ptrs_round(b: _Graph, lam_b: str, counter: str, draw_u: str, key: str, shift: ShiftMode) -> tuple[str, str]:
    """Step 4, one PTRS round: (accepted bool, int32 proposal) for float64 lam_b and uint64 counters.

    ``draw_u`` (uint64 scalar) is (2 + 2j) * 2**32 for round j.
    """
    f64 = np.float64

    def c(v: float) -> str:
        return b.const(v, f64)

    # 4a. draws 2 + 2j (U) and 3 + 2j (V): one squares32 call on both counter sets
    ctr_u = b.op("Add", counter, draw_u)
    ctr_v = b.op("Add", ctr_u, b.const(_COUNTER_STRIDE, np.uint64))
    words = _squares32_graph(b, b.op("Concat", ctr_u, ctr_v, axis=0), key, shift)
    words = b.op("Cast", b.op("Cast", words, to=TensorProto.UINT32), to=TensorProto.DOUBLE)
    h_u, h_v = b.ops("Split", words, n_out=2, axis=0, num_outputs=2)
    two_m32 = c(2.0**-32)
    uu = b.op("Sub", b.op("Mul", b.op("Add", h_u, c(0.5)), two_m32), c(0.5))
    vv = b.op("Mul", b.op("Add", h_v, c(0.5)), two_m32)
    # 4b. Hörmann's constants (1/alpha and log lambda only where the full test needs them)
    bb = b.op("Add", c(_PTRS_B0), b.op("Mul", c(_PTRS_B1), b.op("Sqrt", lam_b)))
    aa = b.op("Add", c(_PTRS_A0), b.op("Mul", c(_PTRS_A1), bb))
    vr = b.op("Sub", c(_PTRS_VR0), b.op("Div", c(_PTRS_VR1), b.op("Sub", bb, c(_PTRS_VR2))))
    # 4c. proposal k = floor((2a/us + b) U + lambda + 0.43)
    us = b.op("Sub", c(0.5), b.op("Abs", uu))
    slope = b.op("Add", b.op("Div", b.op("Mul", c(2.0), aa), us), bb)
    k = b.op("Floor", b.op("Add", b.op("Add", b.op("Mul", slope, uu), lam_b), c(_PTRS_SHIFT)))
    kc = b.op("Max", k, c(0.0))
    # 4d-4e. squeeze acceptance and quick rejection
    squeeze = b.op("And", b.op("GreaterOrEqual", us, c(_PTRS_US_SQUEEZE)), b.op("LessOrEqual", vv, vr))
    reject = b.op(
        "Or", b.op("Less", k, c(0.0)), b.op("And", b.op("Less", us, c(_PTRS_US_REJECT)), b.op("Greater", vv, us))
    )
    # 4f. full test, on the compacted undecided proposals only (~30 %; it holds the logs):
    #     log V + log(1/alpha) - log(a/us^2 + b) <= -lambda + k log lambda - log k!
    full = _flat_nonzero(b, b.op("Not", b.op("Or", squeeze, reject)))
    f_lam, f_vv, f_us, f_aa, f_bb, f_k = (_take(b, t, full) for t in (lam_b, vv, us, aa, bb, kc))
    f_invalpha = b.op("Add", c(_PTRS_IA0), b.op("Div", c(_PTRS_IA1), b.op("Sub", f_bb, c(_PTRS_IA2))))
    lhs = b.op(
        "Sub",
        b.op("Add", b.op("Log", f_vv), b.op("Log", f_invalpha)),
        b.op("Log", b.op("Add", b.op("Div", f_aa, b.op("Mul", f_us, f_us)), f_bb)),
    )
    rhs = b.op(
        "Sub", b.op("Add", b.op("Neg", f_lam), b.op("Mul", f_k, b.op("Log", f_lam))), _emit_log_factorial(b, f_k)
    )
    accept = b.op("ScatterElements", squeeze, full, b.op("LessOrEqual", lhs, rhs), axis=0)
    # every proposal, clamped to int32; a rejected one is overwritten in a later round
    return accept, b.op("Cast", b.op("Min", kc, c(_INT32_MAX)), to=TensorProto.INT32)


def _emit_ptrs_loop(g: _Graph, lam: str, elements: str, key: str, shift: ShiftMode) -> str:
    """Step c (PTRS): float64 lam (Ml,) and int64 element indices (Ml,) -> int32 counts (Ml,).

    Round 0 runs before the Loop on every element (its proposals are the counts, no scatter); the Loop
    runs rounds 1, 2, ... on the rejected ones.
    """
    i64 = np.int64
    counter0 = g.op("Cast", elements, to=TensorProto.UINT64)
    accept0, counts0 = _emit_ptrs_round(
        g, lam, counter0, g.const(_DRAW_PTRS_FIRST * _COUNTER_STRIDE, np.uint64), key, shift
    )
    keep0 = _flat_nonzero(g, g.op("Not", accept0))  # 4g.
    state0 = [keep0] + [_take(g, t, keep0) for t in (counter0, lam)]
    cond0 = g.op("Greater", g.op("Size", keep0), g.const(0, i64))

    b = g.sub()
    names = {k: b.name(f"ptrs_{k}") for k in ("iter", "cond", "pos", "counter", "lam", "counts")}
    lam_b = names["lam"]
    draw_u = b.op(  # round j = iter + 1 uses draw 2 + 2j
        "Mul",
        b.op("Add", b.op("Cast", names["iter"], to=TensorProto.UINT64), b.const(2, np.uint64)),
        b.const(2 * _COUNTER_STRIDE, np.uint64),
    )
    accept, count = _emit_ptrs_round(b, lam_b, names["counter"], draw_u, key, shift)
    counts = b.op("ScatterElements", names["counts"], names["pos"], count, axis=0)
    keep = _flat_nonzero(b, b.op("Not", accept))  # 4g.
    out_state = [_take(b, t, keep) for t in (names["pos"], names["counter"], lam_b)]
    cond = b.op("Greater", b.op("Size", keep), b.const(0, i64))
    body_graph = _make_graph(
        b,
        inputs=[
            (names["iter"], TensorProto.INT64, []),
            (names["cond"], TensorProto.BOOL, []),
            (names["pos"], TensorProto.INT64, [None]),
            (names["counter"], TensorProto.UINT64, [None]),
            (lam_b, TensorProto.DOUBLE, [None]),
            (names["counts"], TensorProto.INT32, [None]),
        ],
        outputs=[
            (cond, TensorProto.BOOL, []),
            (out_state[0], TensorProto.INT64, [None]),
            (out_state[1], TensorProto.UINT64, [None]),
            (out_state[2], TensorProto.DOUBLE, [None]),
            (counts, TensorProto.INT32, [None]),
        ],
        name=g.name("ptrs_body"),
    )
    outs = g.ops("Loop", g.const(MAX_PTRS_ITERATIONS - 1, i64), cond0, *state0, counts0, n_out=4, body=body_graph)
    return outs[-1]


def _make_graph(
    g: _Graph,
    inputs: list[tuple[str, int, list[int | None]]],
    outputs: list[tuple[str, int, list[int | None]]],
    name: str,
) -> onnx.GraphProto:
    """A Loop body from the nodes of ``g`` and its (name, dtype, shape) inputs and outputs."""
    return helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
    )


def _emit_sampler(g: _Graph, rates: str, seed: str, counts: str, block: int, shift: ShiftMode) -> None:
    """Append the whole sampler (steps a-d around 1-4 of the module docstring) to ``g``."""
    i64, f32 = np.int64, np.float32
    flat = g.op("Reshape", rates, g.const([-1], i64))  # (n,) raw rates
    n = g.op("Shape", flat)  # (1,)
    key = _derive_key_graph(g, seed, shift)
    # 1. sanitise: negatives -> 0 here (NaN stays NaN or becomes 0: count 0 either way), min(rate, MAX_RATE)
    #    on the candidates below (the dense screen sends every rate >= SWITCH_RATE, +inf included, there)
    lam_pos = g.op("Max", flat, g.const(0.0, f32))  # (n,)
    # a-b. the byte A of every element, counts decided from A alone, and the elements left to steps c-d
    a = _emit_high_bytes(g, n, key, shift)  # (n,)
    dense_counts, exact = _emit_dense_screen(g, lam_pos, a)
    cand = _flat_nonzero(g, exact)  # (M,)
    lam_c = g.op("Min", _take(g, lam_pos, cand), g.const(MAX_RATE, f32))  # (M,)
    is_small = g.op("Less", lam_c, g.const(SWITCH_RATE, f32))
    small_sel = _flat_nonzero(g, is_small)
    large_sel = _flat_nonzero(g, g.op("Not", is_small))
    small = _take(g, cand, small_sel)  # (Ms,) element indices
    large = _take(g, cand, large_sel)  # (Ml,)
    # 2. uniform of the small-rate candidates: w = (A 2**24 + B + 0.5) / 2**32, u = 1 - w
    high = g.op("Cast", _take(g, a, small), to=TensorProto.UINT64)
    low_counter = g.op(
        "Add", g.op("Cast", small, to=TensorProto.UINT64), g.const(_DRAW_LOW_BITS * _COUNTER_STRIDE, np.uint64)
    )
    low = _squares32_graph(g, low_counter, key, shift, top_bits=_LOW_BITS)
    bits = g.op("Add", g.op("Mul", high, g.const(2**_LOW_BITS, np.uint64)), low)  # (Ms,) < 2**32
    bits = g.op("Cast", g.op("Cast", bits, to=TensorProto.UINT32), to=TensorProto.DOUBLE)
    w = g.op("Mul", g.op("Add", bits, g.const(0.5, np.float64)), g.const(2.0**-32, np.float64))
    u = g.op("Sub", g.const(1.0, np.float64), w)
    # 3-4. the two loops
    lam_small = g.op("Cast", _take(g, lam_c, small_sel), to=TensorProto.DOUBLE)
    counts_small = _emit_inversion_loop(g, lam_small, u, block)
    lam_large = g.op("Cast", _take(g, lam_c, large_sel), to=TensorProto.DOUBLE)
    counts_large = _emit_ptrs_loop(g, lam_large, large, key, shift)
    # d. scatter into the counts decided from A and restore the shape
    where = g.op("Concat", small, large, axis=0)
    values = g.op("Concat", counts_small, counts_large, axis=0)
    dense = g.op("ScatterElements", dense_counts, where, values, axis=0)
    # allowzero: a 0 in the rates' shape is a literal size 0, not "copy this dimension" (shapes (5, 0),
    # (0, 0), ...); for shapes without a zero it changes nothing, so no seed's counts change.
    g.nodes.append(
        helper.make_node("Reshape", [dense, g.op("Shape", rates)], [counts], name=g.name("Reshape"), allowzero=1)
    )


@dataclass(frozen=True)
class SamplerParts:
    """Nodes and initializers that compute ``counts_name`` from ``rates_name`` and ``seed_name``.

    Append both to a host graph whose opset is >= ``DEFAULT_OPSET`` (``append_sampler`` does that).
    """

    nodes: list[onnx.NodeProto]
    initializers: list[TensorProto]


def _check_options(inversion_block: int, shift: str) -> None:
    if not 1 <= inversion_block <= MAX_INVERSION_COUNT:
        raise ValueError(f"inversion_block must be in [1, {MAX_INVERSION_COUNT}], got {inversion_block}")
    if shift not in ("div", "bitshift"):
        raise ValueError(f"shift must be 'div' or 'bitshift', got {shift!r}")


def sampler_parts(
    rates_name: str = RATES_INPUT,
    seed_name: str = SEED_INPUT,
    counts_name: str = COUNTS_OUTPUT,
    *,
    prefix: str = "poisson_sampler/",
    inversion_block: int = DEFAULT_INVERSION_BLOCK,
    shift: ShiftMode = "div",
) -> SamplerParts:
    """The sampler as nodes + initializers; every internal name starts with ``prefix``."""
    _check_options(inversion_block, shift)
    g = _Graph(prefix, [0], [], {})
    _emit_sampler(g, rates_name, seed_name, counts_name, inversion_block, shift)
    return SamplerParts(nodes=g.nodes, initializers=g.initializers)


def _opset_model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pvae.export.sampler")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def build_sampler_model(
    opset: int = DEFAULT_OPSET,
    *,
    inversion_block: int = DEFAULT_INVERSION_BLOCK,
    shift: ShiftMode = "div",
) -> onnx.ModelProto:
    """A standalone model: ``rates`` float32 (N, K), ``seed`` int64 [] -> ``counts`` int32 (N, K).

    Args:
        opset: ai.onnx opset, at least ``DEFAULT_OPSET``.
        inversion_block: sequential-search steps per inversion Loop iteration.
        shift: ``"div"`` (default; runs on the CPU and CUDA EPs) or ``"bitshift"`` (CPU EP only, faster).
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    parts = sampler_parts(inversion_block=inversion_block, shift=shift)
    graph = helper.make_graph(
        parts.nodes,
        "poisson_sampler",
        [
            helper.make_tensor_value_info(RATES_INPUT, TensorProto.FLOAT, ["N", "K"]),
            helper.make_tensor_value_info(SEED_INPUT, TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info(COUNTS_OUTPUT, TensorProto.INT32, ["N", "K"])],
        initializer=parts.initializers,
    )
    model = _opset_model(graph, opset)
    onnx.checker.check_model(model)
    return model


def _value_shape(model: onnx.ModelProto, name: str) -> list[int | str | None]:
    """The (possibly symbolic) shape of value ``name`` after shape inference; ("N", "K") if unknown."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    for value in (*inferred.input, *inferred.output, *inferred.value_info):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return [
                d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                for d in value.type.tensor_type.shape.dim
            ]
    return ["N", "K"]


def append_sampler(
    model: onnx.ModelProto,
    rates_name: str,
    *,
    seed_name: str = SEED_INPUT,
    counts_name: str = COUNTS_OUTPUT,
    prefix: str = "poisson_sampler/",
    inversion_block: int = DEFAULT_INVERSION_BLOCK,
    shift: ShiftMode = "div",
) -> onnx.ModelProto:
    """A copy of ``model`` that also takes ``seed_name`` and outputs ``counts_name`` = Poisson(rates).

    ``rates_name`` is any float32 value of the graph (e.g. the rate path's output). The ai.onnx opset of
    the copy is raised to ``DEFAULT_OPSET`` if it is lower (the caller checks its own ops still validate).
    """
    combined = onnx.ModelProto()
    combined.CopyFrom(model)
    graph = combined.graph
    taken = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    taken |= {o for node in graph.node for o in node.output}
    for name in (seed_name, counts_name):
        if name in taken:
            raise ValueError(f"{name!r} already exists in the host graph")
    if any(name.startswith(prefix) for name in taken):
        raise ValueError(f"the host graph already uses the prefix {prefix!r}")
    parts = sampler_parts(
        rates_name, seed_name, counts_name, prefix=prefix, inversion_block=inversion_block, shift=shift
    )
    graph.node.extend(parts.nodes)
    graph.initializer.extend(parts.initializers)
    graph.input.append(helper.make_tensor_value_info(seed_name, TensorProto.INT64, []))
    graph.output.append(helper.make_tensor_value_info(counts_name, TensorProto.INT32, _value_shape(model, rates_name)))
    for opset in combined.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < DEFAULT_OPSET:
            opset.version = DEFAULT_OPSET
    combined.ir_version = max(combined.ir_version, helper.find_min_ir_version_for(list(combined.opset_import)))
    onnx.checker.check_model(combined)
    return combined
