/*
 * The exact Poisson sampler as a native CPU kernel: the same counts, bit for bit, as the bundle's
 * sampler graph (export/sampler.py) and its numpy specification (export/sampler_reference.py), whose
 * docstring defines the algorithm: a counter-based squares32 generator keyed by the seed, sequential
 * inversion in float64 below SWITCH_RATE and Hoermann's PTRS (1993) at and above it.
 *
 * Why a kernel: the graph has to express "work that follows the spike count" with Loop, NonZero and
 * ScatterND, and on a dense code that costs several times the rate path. Here every element costs a
 * few vectorised float64 operations:
 *
 *   1. Screen (branch-free, vectorised): the uniforms, then F'(k) for k < SCREEN_STEPS from a
 *      polynomial exp(-lambda) whose relative error is below 1e-9. The count is
 *      #{k : u >= F(k)}, so it is settled when u is not within SCREEN_MARGIN (relative) of any F'(k)
 *      and u < F'(SCREEN_STEPS - 1). The margin is 100x the worst gap between F'(k) and the
 *      reference's F(k) (exp error plus rounding), so a settled count equals the reference's.
 *   2. Exact path (scalar, for the rest: counts >= SCREEN_STEPS, u near a boundary, lambda >= 10):
 *      the reference's own float64 sequence, libm exp/log (the reference allows one ulp there).
 *
 * Compile with -ffp-contract=off: a fused multiply-add would round differently from the reference.
 * The entry points are plain C for ctypes (pvae/native/sampler.py); nothing here touches Python.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define PVAE_NATIVE_ABI 5 /* pvae/native/__init__.py ABI: bump with any exported signature */

#define SWITCH_RATE 10.0
#define MAX_RATE 1.0e6f
#define MAX_INVERSION_COUNT 64
#define MAX_PTRS_ITERATIONS 64
#define LOG_FACTORIAL_TABLE 16
#define TWO_32 4294967296.0
#define INV_TWO_32 (1.0 / 4294967296.0)
#define COUNTER_STRIDE ((uint64_t)1 << 32)
#define INT32_CAP 2147483647.0

#define SCREEN_STEPS 6
#define SCREEN_MARGIN 1e-7
#define CHUNK 256
#define MAX_THREADS 64

static const uint64_t DERIVATION_KEY_A = 0x6B2D9E4F8C3A57E1ULL;
static const uint64_t DERIVATION_KEY_B = 0xD3A59C7E2F14B68DULL;

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define PVAE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PVAE_CLONES
#endif
#define PVAE_INLINE static inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------------- */
/* Generator                                                                                       */
/* ---------------------------------------------------------------------------------------------- */
PVAE_INLINE uint64_t rotate32(uint64_t x) { return (x >> 32) | (x << 32); }

/* Widynski's squares32, 4 rounds: the upper 32 bits of the last square. */
PVAE_INLINE uint32_t squares32(uint64_t counter, uint64_t key) {
    uint64_t x = counter * key, y = x, z = y + key;
    x = rotate32(x * x + y);
    x = rotate32(x * x + z);
    x = rotate32(x * x + y);
    return (uint32_t)((x * x + z) >> 32);
}

/* The admissible key of a seed, as sampler_reference.derive_key builds it. */
uint64_t pvae_derive_key(int64_t seed) {
    static const int odd[8] = {1, 3, 5, 7, 9, 11, 13, 15};
    uint64_t s = (uint64_t)seed;
    uint64_t hash = ((uint64_t)squares32(s, DERIVATION_KEY_A) << 32) + squares32(s, DERIVATION_KEY_B);
    uint64_t r[24];
    for (int i = 0; i < 24; ++i) r[i] = squares32(hash + (uint64_t)i, DERIVATION_KEY_A);
    int lower[8], upper[8], used[15] = {0};
    lower[0] = odd[r[0] % 8];
    used[lower[0] - 1] = 1;
    for (int j = 1; j < 8; ++j) { /* the 7 smallest scores 16 r[1 + d] + d, d = nibble - 1 */
        int best = -1;
        uint64_t best_score = 0;
        for (int d = 0; d < 15; ++d) {
            uint64_t score = r[1 + d] * 16u + (uint64_t)d;
            if (!used[d] && (best < 0 || score < best_score)) { best = d; best_score = score; }
        }
        used[best] = 1;
        lower[j] = best + 1;
    }
    upper[0] = 1 + (int)(((uint64_t)lower[7] + r[16] % 14) % 15);
    for (int i = 0; i < 7; ++i) upper[1 + i] = 1 + (int)(((uint64_t)upper[0] + r[17 + i] % 14) % 15);
    uint64_t key = 0;
    for (int i = 0; i < 8; ++i) key |= ((uint64_t)lower[i] << (4 * i)) | ((uint64_t)upper[i] << (32 + 4 * i));
    return key;
}

/* ---------------------------------------------------------------------------------------------- */
/* Exact paths (the reference's float64 sequences)                                                */
/* ---------------------------------------------------------------------------------------------- */
static int32_t inversion_exact(double lam, double u) {
    double p = exp(-lam), s = p;
    if (u < s) return 0;
    for (int k = 1; k <= MAX_INVERSION_COUNT; ++k) {
        p = p * lam / (double)k;
        s = s + p;
        if (u < s) return k;
    }
    return MAX_INVERSION_COUNT + 1;
}

typedef struct {
    double log_factorials[LOG_FACTORIAL_TABLE];
    double half_log_2pi;
} constants_t;

static double log_factorial(double k, const constants_t *c) {
    if (k < LOG_FACTORIAL_TABLE) return c->log_factorials[(int)k];
    double x = k + 1.0, inv = 1.0 / x, inv2 = inv * inv;
    double series = 1.0 / 1188.0;
    series = series * inv2 + -1.0 / 1680.0;
    series = series * inv2 + 1.0 / 1260.0;
    series = series * inv2 + -1.0 / 360.0;
    series = series * inv2 + 1.0 / 12.0;
    return (((x - 0.5) * log(x) - x) + c->half_log_2pi) + series * inv;
}

/* Hoermann's per-rate constants; a run of equal rates (a saturated region, the stress case) reuses them. */
typedef struct {
    double lam, loglam, a, b, vr, log_invalpha;
} ptrs_rate_t;

static void ptrs_setup(double lam, ptrs_rate_t *r) {
    double slam = sqrt(lam);
    r->lam = lam;
    r->loglam = log(lam);
    r->b = 0.931 + 2.53 * slam;
    r->a = -0.059 + 0.02483 * r->b;
    r->vr = 0.9277 - 3.6224 / (r->b - 2.0);
    r->log_invalpha = log(1.1239 + 1.1328 / (r->b - 3.4));
}

static int32_t ptrs_exact(const ptrs_rate_t *r, uint64_t element, uint64_t key, const constants_t *c) {
    const double lam = r->lam, loglam = r->loglam, a = r->a, b = r->b, vr = r->vr, log_invalpha = r->log_invalpha;
    int32_t count = 0;
    for (int j = 0; j < MAX_PTRS_ITERATIONS; ++j) {
        uint64_t draw = (uint64_t)(2 + 2 * j) * COUNTER_STRIDE;
        double uu = ((double)squares32(element + draw, key) + 0.5) * INV_TWO_32 - 0.5;
        double vv = ((double)squares32(element + draw + COUNTER_STRIDE, key) + 0.5) * INV_TWO_32;
        double us = 0.5 - fabs(uu);
        double k = floor((2.0 * a / us + b) * uu + lam + 0.43);
        int squeeze = (us >= 0.07) & (vv <= vr);
        int reject = (k < 0) | ((us < 0.013) & (vv > us));
        double kc = k > 0.0 ? k : 0.0;
        count = kc < INT32_CAP ? (int32_t)kc : (int32_t)INT32_CAP;
        if (squeeze) return count;
        if (!reject) {
            double lhs = log(vv) + log_invalpha - log(a / (us * us) + b);
            double rhs = -lam + k * loglam - log_factorial(kc, c);
            if (lhs <= rhs) return count;
        }
    }
    return count;
}

/* ---------------------------------------------------------------------------------------------- */
/* Screen                                                                                          */
/* ---------------------------------------------------------------------------------------------- */
/* exp(x) for x in [-20, 0], relative error < 1e-9: x = n ln2 + r, |r| <= ln2/2, degree-8 Taylor in r
 * (remainder < 0.347^9 / 9! < 2e-10), 2^n from the bits of n. Branch-free, so it vectorises. */
PVAE_INLINE double exp_screen(double x) {
    const double log2e = 1.4426950408889634, ln2 = 0.6931471805599453;
    double n = floor(x * log2e + 0.5);
    double r = x - n * ln2;
    double p = 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    double shifted = n + 6755399441055744.0; /* 1.5 * 2^52: n lands in the low mantissa bits */
    uint64_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

typedef struct {
    const float *rates;
    int32_t *counts;
    uint64_t n, slots, key, slot_begin, slot_end;
    const constants_t *constants;
    uint64_t exact; /* out: elements that took an exact path */
} job_t;

PVAE_CLONES static void run_job(job_t *job) {
    const float *rates = job->rates;
    int32_t *counts = job->counts;
    const uint64_t n = job->n, slots = job->slots, key = job->key;
    uint32_t word[CHUNK];
    double u[CHUNK], lam[CHUNK];
    int32_t screened[CHUNK], unsettled[CHUNK];
    uint64_t exact = 0;
    ptrs_rate_t ptrs_rate = {-1.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (uint64_t s0 = job->slot_begin; s0 < job->slot_end; s0 += CHUNK) {
        const uint64_t m = job->slot_end - s0 < CHUNK ? job->slot_end - s0 : CHUNK;
        for (uint64_t i = 0; i < m; ++i) word[i] = squares32(s0 + i, key); /* draw 0: one byte per lane */
        for (uint64_t lane = 0; lane < 4; ++lane) {
            const uint64_t e0 = lane * slots + s0;
            if (e0 >= n) break;
            const uint64_t len = n - e0 < m ? n - e0 : m;
            const unsigned shift = (unsigned)(24 - 8 * lane);
            for (uint64_t i = 0; i < len; ++i) {
                uint64_t e = e0 + i;
                uint32_t high = (word[i] >> shift) & 0xFFu;
                uint32_t low = squares32(e + COUNTER_STRIDE, key) >> 8; /* draw 1: 24 bits */
                double w = ((double)((high << 24) | low) + 0.5) * INV_TWO_32;
                u[i] = 1.0 - w;
                float r = rates[e];
                lam[i] = (double)(r > 0.0f ? (r < MAX_RATE ? r : MAX_RATE) : 0.0f);
            }
            for (uint64_t i = 0; i < len; ++i) {
                double l = lam[i], uu = u[i];
                double x = -l > -20.0 ? -l : -20.0;
                double p = exp_screen(x), f = p;
                int32_t c = uu >= f;
                int32_t near = fabs(uu - f) <= SCREEN_MARGIN * f;
                for (int k = 1; k < SCREEN_STEPS; ++k) {
                    p = p * l * (1.0 / (double)k);
                    f = f + p;
                    c += uu >= f;
                    near |= fabs(uu - f) <= SCREEN_MARGIN * f;
                }
                screened[i] = c;
                unsettled[i] = near | (c == SCREEN_STEPS) | (l >= SWITCH_RATE);
            }
            for (uint64_t i = 0; i < len; ++i) {
                if (!unsettled[i]) {
                    counts[e0 + i] = screened[i];
                    continue;
                }
                ++exact;
                if (lam[i] < SWITCH_RATE) {
                    counts[e0 + i] = inversion_exact(lam[i], u[i]);
                    continue;
                }
                if (lam[i] != ptrs_rate.lam) ptrs_setup(lam[i], &ptrs_rate);
                counts[e0 + i] = ptrs_exact(&ptrs_rate, e0 + i, key, job->constants);
            }
        }
    }
    job->exact = exact;
}

static void *run_job_thread(void *arg) {
    run_job((job_t *)arg);
    return NULL;
}

int pvae_native_abi(void) { return PVAE_NATIVE_ABI; }

/* The screen's exp on x in [-20, 0] (smaller x is clamped to -20): exported so that the tests can bound
 * its error, on which the screen's margin rests. */
double pvae_screen_exp(double x) { return exp_screen(x > -20.0 ? x : -20.0); }

/*
 * counts[e] ~ Poisson(rates[e]) for e < n, drawn with the key of `seed` (pvae_derive_key), the
 * work split over `threads` threads (1 = the caller's). log_factorials: log k! for k < 16 exactly as
 * the reference tabulates them; half_log_2pi likewise. `exact_out` (may be NULL) receives how many
 * elements the screen left to the exact paths. Returns 0, or -1 for n >= 2^32 (the counter holds
 * the element index in 32 bits). A thread that cannot be started leaves its share to the caller's.
 */
int pvae_poisson(const float *rates, int32_t *counts, uint64_t n, int64_t seed, int threads,
                 const double *log_factorials, double half_log_2pi, uint64_t *exact_out) {
    if (n >= (1ULL << 32)) return -1;
    constants_t constants;
    memcpy(constants.log_factorials, log_factorials, sizeof constants.log_factorials);
    constants.half_log_2pi = half_log_2pi;
    const uint64_t key = pvae_derive_key(seed), slots = (n + 3) / 4;
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if ((uint64_t)threads > (slots + CHUNK - 1) / CHUNK) threads = (int)((slots + CHUNK - 1) / CHUNK);
    if (threads < 1) threads = 1;
    job_t jobs[MAX_THREADS];
    pthread_t handles[MAX_THREADS];
    const uint64_t per = (slots + (uint64_t)threads - 1) / (uint64_t)threads;
    for (int t = 0; t < threads; ++t) {
        uint64_t begin = per * (uint64_t)t, end = begin + per;
        if (begin > slots) begin = slots;
        if (end > slots) end = slots;
        jobs[t] = (job_t){rates, counts, n, slots, key, begin, end, &constants, 0};
    }
    int started = 1, failed = 0;
    for (int t = 1; t < threads; ++t, ++started) {
        if (pthread_create(&handles[t], NULL, run_job_thread, &jobs[t]) != 0) { failed = 1; break; }
    }
    run_job(&jobs[0]);
    for (int t = 1; t < started; ++t) pthread_join(handles[t], NULL);
    if (failed) { /* finish the unstarted share here: the counts are the same whichever thread draws them */
        for (int t = started; t < threads; ++t) run_job(&jobs[t]);
    }
    if (exact_out) {
        uint64_t total = 0;
        for (int t = 0; t < threads; ++t) total += jobs[t].exact;
        *exact_out = total;
    }
    return 0;
}
