/*
 * Native packing kernels for serving (pvae/serving/pack.py): the same bytes as the numpy code there,
 * which stays the specification and the fallback. Plain C for ctypes (pvae/native/__init__.py).
 *
 *   pvae_row_stats      per patch: sum z, sum z^2, number of non-zero counts (frame statistics, offsets)
 *   pvae_sparse_events  the non-zero counts as (latent uint16, min(count, 255) uint8) events, row-major,
 *                       and the exact counts >= 255 in event order
 *   pvae_rice_plan      per column, the Rice parameter with the fewest bits, and the two streams' sizes
 *   pvae_rice_write     the unary quotient and the remainder bit streams (MSB first, zero-padded)
 *   pvae_rate_deltas    rates -> log-grid codes (by table, no log) -> per-column upper median -> zigzag
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define U8_SATURATED 255
#define MAX_RICE_PARAMETER 31
#define RATE_CODE_TOP 255

void pvae_row_stats(const int32_t *counts, uint64_t rows, uint64_t cols, int64_t *sum_z, int64_t *sum_z2,
                    int64_t *nonzero) {
    for (uint64_t r = 0; r < rows; ++r) {
        const int32_t *row = counts + r * cols;
        int64_t s = 0, s2 = 0, nz = 0;
        for (uint64_t c = 0; c < cols; ++c) {
            int64_t v = row[c];
            s += v;
            s2 += v * v;
            nz += v != 0;
        }
        sum_z[r] = s;
        sum_z2[r] = s2;
        nonzero[r] = nz;
    }
}

/* Returns the number of events written; `large` receives the counts >= 255 (its length in *n_large) and
 * `row_events` each row's number of events. Branch-free but for the rare large count: every entry is
 * written at the next event slot, and the slot advances only for a non-zero count. */
uint64_t pvae_sparse_events(const int32_t *counts, uint64_t rows, uint64_t cols, uint16_t *latents,
                            uint8_t *values, int64_t *large, uint64_t *n_large, int64_t *row_events) {
    uint64_t events = 0, big = 0;
    for (uint64_t r = 0; r < rows; ++r) {
        const int32_t *row = counts + r * cols;
        const uint64_t first = events;
        for (uint64_t c = 0; c < cols; ++c) {
            int32_t v = row[c];
            latents[events] = (uint16_t)c;
            values[events] = (uint8_t)(v < U8_SATURATED ? v : U8_SATURATED);
            if (__builtin_expect(v >= U8_SATURATED, 0)) large[big++] = v;
            events += v != 0;
        }
        row_events[r] = (int64_t)(events - first);
    }
    *n_large = big;
    return events;
}

static unsigned bit_length(uint64_t v) {
    unsigned n = 0;
    while (v) { ++n; v >>= 1; }
    return n;
}

/* Per column, the k in [0, min(bit_length(max), 31)] minimising sum(v >> k) + rows (1 + k) (the first such
 * k on ties, as numpy's argmin); and the bit counts of the quotient and remainder streams. Values must be
 * >= 0 (int32). `scratch` holds (MAX_RICE_PARAMETER + 1) * cols int64. */
void pvae_rice_plan(const int32_t *values, uint64_t rows, uint64_t cols, uint8_t *parameters, uint64_t *quotient_bits,
                    uint64_t *remainder_bits, int64_t *scratch) {
    int32_t top_value = 0;
    for (uint64_t i = 0; i < rows * cols; ++i) top_value = values[i] > top_value ? values[i] : top_value;
    unsigned top = bit_length((uint64_t)top_value);
    if (top > MAX_RICE_PARAMETER) top = MAX_RICE_PARAMETER;
    int64_t *sums = scratch; /* sums[k * cols + c] = sum over rows of v >> k */
    memset(sums, 0, sizeof(int64_t) * (top + 1) * cols);
    for (uint64_t r = 0; r < rows; ++r) {
        const int32_t *row = values + r * cols;
        for (unsigned k = 0; k <= top; ++k) {
            int64_t *sk = sums + k * cols;
            for (uint64_t c = 0; c < cols; ++c) sk[c] += row[c] >> k;
        }
    }
    uint64_t q_bits = 0, r_bits = 0;
    for (uint64_t c = 0; c < cols; ++c) {
        unsigned best = 0;
        int64_t best_cost = sums[c] + (int64_t)rows;
        for (unsigned k = 1; k <= top; ++k) {
            int64_t cost = sums[k * cols + c] + (int64_t)rows * (1 + (int64_t)k);
            if (cost < best_cost) { best = k; best_cost = cost; }
        }
        parameters[c] = (uint8_t)best;
        q_bits += (uint64_t)sums[best * cols + c] + rows;
        r_bits += rows * best;
    }
    *quotient_bits = q_bits;
    *remainder_bits = r_bits;
}

/* An MSB-first bit writer: bits gather in a 64-bit accumulator and leave 32 at a time. */
typedef struct {
    uint8_t *out;
    uint64_t byte;
    uint64_t acc; /* pending bits, right-aligned (only the low n matter) */
    unsigned n;   /* how many: < 32 between calls */
} bits_t;

static inline void put_bits(bits_t *w, uint64_t value, unsigned n) { /* 1 <= n <= 32, value < 2^n */
    w->acc = (w->acc << n) | value;
    w->n += n;
    if (w->n >= 32) {
        w->n -= 32;
        uint32_t word = (uint32_t)(w->acc >> w->n);
        w->out[w->byte] = (uint8_t)(word >> 24);
        w->out[w->byte + 1] = (uint8_t)(word >> 16);
        w->out[w->byte + 2] = (uint8_t)(word >> 8);
        w->out[w->byte + 3] = (uint8_t)word;
        w->byte += 4;
    }
}

/* q one-bits then a zero-bit */
static inline void put_unary(bits_t *w, uint64_t q) {
    while (q >= 32) { put_bits(w, 0xFFFFFFFFu, 32); q -= 32; }
    put_bits(w, ((1ULL << q) - 1) << 1, (unsigned)q + 1);
}

static inline void flush_bits(bits_t *w) {
    while (w->n >= 8) {
        w->n -= 8;
        w->out[w->byte++] = (uint8_t)(w->acc >> w->n);
    }
    if (w->n) w->out[w->byte++] = (uint8_t)(w->acc << (8 - w->n));
    w->n = 0;
}

/* Output buffers hold ceil(bits / 8) bytes from pvae_rice_plan. */
void pvae_rice_write(const int32_t *values, uint64_t rows, uint64_t cols, const uint8_t *parameters,
                     uint8_t *quotients, uint8_t *remainders) {
    bits_t q = {quotients, 0, 0, 0}, rem = {remainders, 0, 0, 0};
    for (uint64_t r = 0; r < rows; ++r) {
        const int32_t *row = values + r * cols;
        for (uint64_t c = 0; c < cols; ++c) {
            const unsigned k = parameters[c];
            const uint64_t v = (uint64_t)row[c];
            put_unary(&q, v >> k);
            if (k) put_bits(&rem, v & ((1ULL << k) - 1), k);
        }
    }
    flush_bits(&q);
    flush_bits(&rem);
}

/* rates (rows x cols) -> base[c] (each column's upper median code) and zigzag(code - base) per entry.
 *
 * The code of a rate is serving/pack.py's rate_codes: rint((log r - log_min) / log_step) + 1, capped at
 * 255; 0 below the grid, for 0, negatives and NaN. That map is monotone in r, so it is fixed by its 255
 * thresholds: `thresholds[c]` (c = 1..255) is the smallest float32 whose code is >= c, found by the
 * caller with rate_codes itself, and thresholds[256] is NaN (never reached). `table` maps the top 16 bits
 * of a float32 to the code of the smallest float with those bits; a 16-bit bucket is 2^-7 wide
 * (relative), narrower than one grid step (e^0.084), so it holds at most one threshold and the code is
 * table[b] or table[b] + 1. NaN is tested apart (its bucket may hold +inf's code). No log is taken.
 * `histogram` holds 256 * cols int32, code-major (neighbouring columns' counters share cache lines). */
void pvae_rate_deltas(const float *rates, uint64_t rows, uint64_t cols, const float *thresholds,
                      const uint8_t *table, uint8_t *base, int32_t *zigzag, int32_t *histogram) {
    memset(histogram, 0, sizeof(int32_t) * cols * (RATE_CODE_TOP + 1));
    for (uint64_t r = 0; r < rows; ++r) {
        const float *row = rates + r * cols;
        int32_t *out = zigzag + r * cols;
        for (uint64_t c = 0; c < cols; ++c) {
            const float rate = row[c];
            uint32_t bits;
            memcpy(&bits, &rate, sizeof bits);
            int32_t code = table[bits >> 16];
            code += rate >= thresholds[code + 1];
            code = rate == rate ? code : 0;
            out[c] = code; /* the code for now; the delta below */
            histogram[(uint64_t)code * cols + c] += 1;
        }
    }
    const int64_t half = (int64_t)(rows / 2);
    for (uint64_t c = 0; c < cols; ++c) { /* base = #codes whose cumulative count stays <= rows // 2 */
        int64_t cumulative = 0, below = 0;
        for (uint64_t code = 0; code <= RATE_CODE_TOP; ++code) {
            cumulative += histogram[code * cols + c];
            below += cumulative <= half;
        }
        base[c] = (uint8_t)(rows ? below : 0);
    }
    for (uint64_t r = 0; r < rows; ++r) {
        int32_t *row = zigzag + r * cols;
        for (uint64_t c = 0; c < cols; ++c) {
            int32_t delta = row[c] - (int32_t)base[c];
            row[c] = delta >= 0 ? 2 * delta : -2 * delta - 1;
        }
    }
}
