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

/* GCC on x86-64 also builds an AVX2 copy of the hot loops and picks one at load time (integer results, so
 * both copies give the same bytes); elsewhere the plain build. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PVAE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PVAE_CLONES
#endif

PVAE_CLONES
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
 * >= 0 (int32). `scratch` holds (MAX_RICE_PARAMETER + 1) * cols int64 and cols int32 after them.
 *
 * The sums S_k = sum(v >> k) are taken one k at a time, and no further once S_k <= rows in every column:
 * from there on cost(k + 1) - cost(k) = rows - (S_k - S_(k+1)) >= rows - S_k >= 0, so no later k is
 * cheaper (at k = bit_length(max), S_k = 0, so it stops by then). Column sums gather in int32 over blocks
 * of rows short enough that they cannot overflow (block * max < 2^31), which vectorises. */
PVAE_CLONES
void pvae_rice_plan(const int32_t *values, uint64_t rows, uint64_t cols, uint8_t *parameters, uint64_t *quotient_bits,
                    uint64_t *remainder_bits, int64_t *scratch) {
    int32_t top_value = 0;
    for (uint64_t i = 0; i < rows * cols; ++i) top_value = values[i] > top_value ? values[i] : top_value;
    unsigned top = bit_length((uint64_t)top_value);
    if (top > MAX_RICE_PARAMETER) top = MAX_RICE_PARAMETER;
    int64_t *sums = scratch; /* sums[k * cols + c] = S_k of column c */
    int32_t *block_sums = (int32_t *)(scratch + (MAX_RICE_PARAMETER + 1) * cols);
    const uint64_t block = top_value ? (uint64_t)(INT32_MAX / top_value) : rows;
    unsigned last_k = top;
    for (unsigned k = 0; k <= top; ++k) {
        int64_t *sk = sums + k * cols;
        memset(sk, 0, sizeof(int64_t) * cols);
        for (uint64_t first = 0; first < rows; first += block) {
            const uint64_t last = first + block < rows ? first + block : rows;
            memset(block_sums, 0, sizeof(int32_t) * cols);
            for (uint64_t r = first; r < last; ++r) {
                const int32_t *row = values + r * cols;
                for (uint64_t c = 0; c < cols; ++c) block_sums[c] += row[c] >> k;
            }
            for (uint64_t c = 0; c < cols; ++c) sk[c] += block_sums[c];
        }
        int settled = 1;
        for (uint64_t c = 0; c < cols; ++c) settled &= sk[c] <= (int64_t)rows;
        if (settled) {
            last_k = k;
            break;
        }
    }
    uint64_t q_bits = 0, r_bits = 0;
    for (uint64_t c = 0; c < cols; ++c) {
        unsigned best = 0;
        int64_t best_cost = sums[c] + (int64_t)rows;
        for (unsigned k = 1; k <= last_k; ++k) {
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

/* Stores a 64-bit word of an MSB-first bit stream at word `index` (big-endian bytes). */
static inline void store_word(uint8_t *out, uint64_t index, uint64_t word) {
    word = __builtin_bswap64(word);
    memcpy(out + index * 8, &word, sizeof word);
}

/* Writes the two streams, whose bit counts pvae_rice_plan gave (`quotient_bits`; the remainder stream's
 * length follows from the parameters). Output buffers hold ceil(bits / 8) + 8 bytes (pack.py RICE_SLACK):
 * whole 64-bit words are stored, and the streams are their first ceil(bits / 8) bytes, zero-padded.
 * `coded` is scratch for cols uint32.
 *
 * The quotient stream is all ones but for the zero that ends each entry's code, so it is written a word at
 * a time: each entry only moves the position on by its quotient + 1 and clears one bit. The remainders of
 * a row go to the columns with a non-zero parameter only, in a 64-bit accumulator. */
void pvae_rice_write(const int32_t *values, uint64_t rows, uint64_t cols, const uint8_t *parameters,
                     uint8_t *quotients, uint8_t *remainders, uint64_t quotient_bits, uint32_t *coded) {
    uint64_t n_coded = 0;
    for (uint64_t c = 0; c < cols; ++c) {
        coded[n_coded] = (uint32_t)c;
        n_coded += parameters[c] != 0;
    }
    uint64_t q_word = 0, q_acc = ~0ULL, position = 0; /* quotient stream: word index, its bits, bits so far */
    uint64_t r_word = 0, r_acc = 0;                    /* remainder stream: word index, pending bits (top) */
    unsigned r_n = 0;                                  /* how many pending: < 64 */
    for (uint64_t r = 0; r < rows; ++r) {
        const int32_t *row = values + r * cols;
        for (uint64_t c = 0; c < cols; ++c) {
            position += ((uint64_t)row[c] >> parameters[c]) + 1;
            const uint64_t zero = position - 1;
            while (__builtin_expect((zero >> 6) != q_word, 0)) { /* a word is full (or all ones) */
                store_word(quotients, q_word++, q_acc);
                q_acc = ~0ULL;
            }
            q_acc &= ~(1ULL << (63 - (zero & 63)));
        }
        for (uint64_t i = 0; i < n_coded; ++i) {
            const uint64_t c = coded[i];
            const unsigned k = parameters[c];
            const uint64_t v = (uint64_t)row[c] & ((1ULL << k) - 1);
            if (r_n + k < 64) {
                r_acc |= v << (64 - r_n - k);
                r_n += k;
            } else { /* the word fills: its last bits, then the rest of v starts the next */
                const unsigned spill = r_n + k - 64;
                store_word(remainders, r_word++, r_acc | (v >> spill));
                r_acc = spill ? v << (64 - spill) : 0;
                r_n = spill;
            }
        }
    }
    if (quotient_bits) {
        if (quotient_bits & 63) q_acc &= ~0ULL << (64 - (quotient_bits & 63)); /* zero padding */
        store_word(quotients, q_word, q_acc);
    }
    if (r_n) store_word(remainders, r_word, r_acc);
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
 * `histogram` is scratch for 256 * cols int32; the codes are counted HISTOGRAM_COLUMNS columns at a time,
 * so that those columns' counters stay in the L1 cache. */
#define HISTOGRAM_COLUMNS 16
PVAE_CLONES
void pvae_rate_deltas(const float *rates, uint64_t rows, uint64_t cols, const float *thresholds,
                      const uint8_t *table, uint8_t *base, int32_t *zigzag, int32_t *histogram) {
    for (uint64_t i = 0; i < rows * cols; ++i) { /* the codes, for now in place of the deltas */
        const float rate = rates[i];
        uint32_t bits;
        memcpy(&bits, &rate, sizeof bits);
        int32_t code = table[bits >> 16];
        code += rate >= thresholds[code + 1];
        zigzag[i] = rate == rate ? code : 0;
    }
    const int64_t half = (int64_t)(rows / 2);
    for (uint64_t c0 = 0; c0 < cols; c0 += HISTOGRAM_COLUMNS) {
        const uint64_t width = cols - c0 < HISTOGRAM_COLUMNS ? cols - c0 : HISTOGRAM_COLUMNS;
        int32_t *counts = histogram + c0 * (RATE_CODE_TOP + 1); /* column-major: [column][code] */
        memset(counts, 0, sizeof(int32_t) * width * (RATE_CODE_TOP + 1));
        for (uint64_t r = 0; r < rows; ++r) {
            const int32_t *codes = zigzag + r * cols + c0;
            for (uint64_t j = 0; j < width; ++j) counts[j * (RATE_CODE_TOP + 1) + (uint64_t)codes[j]] += 1;
        }
        for (uint64_t j = 0; j < width; ++j) { /* base = #codes whose cumulative count stays <= rows // 2 */
            const int32_t *column = counts + j * (RATE_CODE_TOP + 1);
            int64_t cumulative = 0, below = 0;
            for (uint64_t code = 0; code <= RATE_CODE_TOP; ++code) {
                cumulative += column[code];
                below += cumulative <= half;
            }
            base[c0 + j] = (uint8_t)(rows ? below : 0);
        }
    }
    for (uint64_t r = 0; r < rows; ++r) {
        int32_t *row = zigzag + r * cols;
        for (uint64_t c = 0; c < cols; ++c) {
            int32_t delta = row[c] - (int32_t)base[c];
            row[c] = delta >= 0 ? 2 * delta : -2 * delta - 1;
        }
    }
}
