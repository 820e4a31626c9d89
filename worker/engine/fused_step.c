/* One optimiser step of the spherical spotlight, fused into a single pass over the embeddings.
 *
 * Why C: on a CPU the step is bound by reading X (n x d, float32). The torch path reads it twice
 * (X M forward, G X backward) through skinny matrix products that run at about half a
 * matrix-vector product's bandwidth. Here each row is read from memory once: its R distances, kernel
 * values and every sum the objective and gradient need are taken while the row is in L1.
 * See worker/engine/native.py (build, load, threads) and core._spherical_step (the same maths in
 * torch, which this must match).
 *
 * The gradient is linear in two per-restart scalars known only after the pass (1/T and
 * beta - V/T), so the pass accumulates the two halves separately:
 *   stats[r*7 + 0..6] = T  = sum w k,        N  = sum ws k,
 *                       E1 = sum ws e,       E2 = sum w e,
 *                       Q1 = sum ws e D,     Q2 = sum w e D,     Dmin = min over w > 0 of D
 *   h[r][.] = sum ws e x,   h[R + r][.] = sum w e x
 * with D = max(0, |x|^2 - 2 x.mu + |mu|^2), u = a D, and per kernel
 *   gaussian: k = exp(-u/2), e = k;     flat: k = max(0, 1 - u), e = [u <= 1].
 * Scalar sums are in double; h is summed in float over at most 256 rows, then flushed to double.
 * Portable C (GCC/Clang vector extensions): -march=native picks the widest vectors the CPU has.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

typedef float vf __attribute__((vector_size(64), aligned(4)));
#define VL 16
#define MAX_R 8
#define MAX_BLOCK_ROWS 16
#define FLUSH_ROWS 256
#define MAX_CHUNKS 32 /* per pass: chunks of n / 32 rows, at least MIN_CHUNK_ROWS */
#define MIN_CHUNK_ROWS 1024
#define MAX_THREADS 256
#ifndef STREAMS
#define STREAMS 2
#endif
#define PF_ROWS(d) ((d) >= 512 ? 2 : (1024 + (d) - 1) / (d)) /* software prefetch ~4 KB ahead per stream */

typedef int vi __attribute__((vector_size(64), aligned(4)));

/* exp on 16 floats (Cephes' expf: range reduction by ln 2, degree-5 polynomial). Within 1 ulp of
 * libm's expf over x in [-87, 0] (tests/engine/test_native.py checks it through spotlight_vexpf);
 * the step maps x < -87 to 0 itself. */
static inline vf vexpf(vf x) {
    x = (vf)(((vi)x & (x > -87.5f)) | ((vi)(x - x + -87.5f) & (x <= -87.5f))); /* max(x, -87.5) */
    vf fx = x * 1.44269504088896341f + 0.5f;
    vf n = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
    n += __builtin_convertvector(n > fx, vf); /* truncation -> floor: the comparison is -1 where true */
    x -= n * 0.693359375f;
    x -= n * -2.12194440e-4f;
    const vf z = x * x;
    vf y = 1.9875691500e-4f * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return y * (vf)e;
}

#define SV __builtin_shufflevector
/* The lane sums of 8 vectors at once, by halving twice with shuffles that pair them up (23 vector
 * ops instead of 8 x 15 scalar adds, which cost ~a third of a row's work at d = 128). */
static inline void hsum8(const vf *v, float *out) {
    vf w[4], y[2];
    for (int i = 0; i < 4; ++i) /* lanes 0-7: halves of v[2i]; 8-15: of v[2i+1] */
        w[i] = SV(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               SV(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 2; ++i) /* 4 lanes per vector */
        y[i] = SV(w[2 * i], w[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               SV(w[2 * i], w[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    /* 2 lanes per vector, then 1 */
    vf z = SV(y[0], y[1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           SV(y[0], y[1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    z += SV(z, z, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    for (int k = 0; k < 8; ++k) out[k] = z[2 * k];
}

/* Phase A of a block: the R dot products of each row (two rows at a time, so each centre vector
 * loaded from L1 serves two rows), then the scalars. Leaves c[row][q] (q < 2R: ws e, then w e). */
static inline __attribute__((always_inline)) void block_scalars(
    const float *restrict x, long d, const long *restrict idx, long L, const float *restrict sq,
    const float *restrict w, const float *restrict ws, const float *restrict mt, const float *restrict mm,
    const float *restrict ar, int flat, double *restrict stats, float *restrict c, const int R) {
    const long pf = PF_ROWS(d) * d;
    /* squared distances, kernel values and factors e of the block, padded to whole vectors */
    float dd[MAX_BLOCK_ROWS * MAX_R] __attribute__((aligned(64))) = {0};
    float kk[MAX_BLOCK_ROWS * MAX_R] __attribute__((aligned(64)));
    float ee[MAX_BLOCK_ROWS * MAX_R] __attribute__((aligned(64)));
    for (long p = 0; p < L; p += 2) {
        const int two = p + 1 < L;
        const float *x0 = x + idx[p] * d;
        const float *x1 = two ? x + idx[p + 1] * d : x0;
        vf acc0[MAX_R], acc1[MAX_R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) { acc0[r] = (vf){0}; acc1[r] = (vf){0}; }
        long j = 0;
        for (; j + VL <= d; j += VL) {
            __builtin_prefetch(x0 + pf + j);
            __builtin_prefetch(x1 + pf + j);
            vf v0 = *(const vf *)(x0 + j), v1 = *(const vf *)(x1 + j);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
                vf q = *(const vf *)(mt + r * d + j);
                acc0[r] += v0 * q;
                acc1[r] += v1 * q;
            }
        }
        /* lane sums: [row 0: restarts 0..R-1, row 1: restarts 0..R-1], 8 vectors at a time */
        vf all[2 * MAX_R + 8];
        float sums[2 * MAX_R + 8];
        for (int r = 0; r < R; ++r) {
            all[r] = acc0[r];
            all[R + r] = acc1[r];
        }
        for (int q = 2 * R; q < ((2 * R + 7) & ~7); ++q) all[q] = (vf){0};
        for (int q = 0; q < 2 * R; q += 8) hsum8(all + q, sums + q);
        for (int r = 0; r < R; ++r) {
            float s0 = sums[r], s1 = sums[R + r];
            for (long jj = j; jj < d; ++jj) {
                s0 += x0[jj] * mt[r * d + jj];
                s1 += x1[jj] * mt[r * d + jj];
            }
            for (int t = 0; t < 1 + two; ++t) {
                float dist = sq[idx[p + t]] - 2.0f * (t ? s1 : s0) + mm[r];
                dd[(p + t) * R + r] = dist > 0.0f ? dist : 0.0f;
            }
        }
    }
    /* The block's kernel values, 16 at a time (position p * R + r; ar holds a[r] at each). */
    for (long i = 0; i < L * R; i += VL) {
        const vf u = *(const vf *)(ar + i) * *(const vf *)(dd + i);
        if (flat) {
            const vf k = 1.0f - u;
            *(vf *)(kk + i) = (vf)((vi)k & (k > 0.0f));
            *(vf *)(ee + i) = (vf)((vi)(vf){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1} & (u <= 1.0f));
        } else { /* exp(-87.3) is float's least normal: below it, 0 rather than a denormal */
            const vf k = (vf)((vi)vexpf(-0.5f * u) & (u < 174.0f));
            *(vf *)(kk + i) = k;
            *(vf *)(ee + i) = k;
        }
    }
    /* Sums over the block's rows in float (<= 16 terms), then into the double totals. */
    float t_w[MAX_R] = {0}, t_ws[MAX_R] = {0}, e_ws[MAX_R] = {0}, e_w[MAX_R] = {0}, q_ws[MAX_R] = {0},
          q_w[MAX_R] = {0};
    for (long p = 0; p < L; ++p) {
        const long row = idx[p];
        const float wi = w[row], wsi = ws[row];
        float *cr = c + p * 2 * R;
        for (int r = 0; r < R; ++r) {
            const float k = kk[p * R + r], e = ee[p * R + r], dist = dd[p * R + r];
            t_w[r] += wi * k;
            t_ws[r] += wsi * k;
            e_ws[r] += wsi * e;
            e_w[r] += wi * e;
            q_ws[r] += wsi * e * dist;
            q_w[r] += wi * e * dist;
            if (wi > 0.0f && dist < stats[r * 7 + 6]) stats[r * 7 + 6] = dist;
            cr[r] = wsi * e;
            cr[R + r] = wi * e;
        }
    }
    for (int r = 0; r < R; ++r) {
        double *st = stats + r * 7;
        st[0] += t_w[r];
        st[1] += t_ws[r];
        st[2] += e_ws[r];
        st[3] += e_w[r];
        st[4] += q_ws[r];
        st[5] += q_w[r];
    }
}

/* Phase B of a block (rows still in L2): h[q][j] += sum_rows c[row][q] x[row][j], with the 2R
 * accumulators of one 16-wide column strip in registers; rows whose c are all 0 (outside a flat
 * kernel) are skipped. */
static inline __attribute__((always_inline)) void block_pullback(
    const float *restrict x, long d, const long *restrict idx, long L, const float *restrict c,
    float *restrict hb, long *restrict live, const int R) {
    const int Q = 2 * R;
    long nl = 0;
    for (long p = 0; p < L; ++p) {
        const float *cr = c + p * Q;
        int any = 0;
        for (int q = 0; q < Q; ++q) any |= cr[q] != 0.0f;
        if (any) live[nl++] = p;
    }
    if (nl == 0) return;
    long j = 0;
    for (; j + VL <= d; j += VL) {
        vf acc[2 * MAX_R];
#pragma GCC unroll 16
        for (int q = 0; q < Q; ++q) acc[q] = (vf){0};
        for (long l = 0; l < nl; ++l) {
            const long p = live[l];
            const vf v = *(const vf *)(x + idx[p] * d + j);
            const float *cr = c + p * Q;
#pragma GCC unroll 16
            for (int q = 0; q < Q; ++q) acc[q] += cr[q] * v;
        }
#pragma GCC unroll 16
        for (int q = 0; q < Q; ++q) *(vf *)(hb + q * d + j) += acc[q];
    }
    for (; j < d; ++j)
        for (int q = 0; q < Q; ++q) {
            float s = 0.0f;
            for (long l = 0; l < nl; ++l) s += c[live[l] * Q + q] * x[idx[live[l]] * d + j];
            hb[q * d + j] += s;
        }
}

static inline __attribute__((always_inline)) void rows_fused(
    const float *restrict x, long d, long i0, long i1, const float *restrict sq, const float *restrict w,
    const float *restrict ws, const float *restrict mt, const float *restrict mm, const float *restrict a,
    int flat, double *restrict stats, double *restrict h, float *restrict hb, const int R) {
    float c[MAX_BLOCK_ROWS * 2 * MAX_R];
    long live[MAX_BLOCK_ROWS], idx[MAX_BLOCK_ROWS];
    float ar[MAX_BLOCK_ROWS * MAX_R] __attribute__((aligned(64)));
    for (int i = 0; i < MAX_BLOCK_ROWS * MAX_R; ++i) ar[i] = a[i % R];
    double local[7 * MAX_R]; /* on this thread's stack: callers' per-thread outputs share cache lines */
    memcpy(local, stats, sizeof(double) * 7 * R);
    /* Rows per block: the block must stay in L1 between the two phases. Rows a power-of-two stride
     * apart fall in the same few cache sets, so the block is kept to ~32 KiB and at most 16 rows. */
    long rows = 32768 / (4 * d);
    rows = rows < 8 ? 8 : rows > MAX_BLOCK_ROWS ? MAX_BLOCK_ROWS : rows & ~1L;
    const long n_hb = 2L * R * d;
    memset(hb, 0, sizeof(float) * n_hb);
    long pending = 0;
    /* STREAMS parts of the range read side by side: a core keeps more reads in flight on several
     * streams than on one (measured 15-25 % faster at d = 512 with 2 than with 1). A block takes
     * rows / STREAMS rows from each, interleaved. */
    long start[STREAMS], end[STREAMS];
    for (int t = 0; t < STREAMS; ++t) {
        start[t] = i0 + (i1 - i0) * t / STREAMS;
        end[t] = i0 + (i1 - i0) * (t + 1) / STREAMS;
    }
    const long per = rows / STREAMS;
    for (long k0 = 0;; k0 += per) {
        long L = 0;
        for (long k = k0; k < k0 + per; ++k)
            for (int t = 0; t < STREAMS; ++t)
                if (start[t] + k < end[t]) idx[L++] = start[t] + k;
        if (L == 0) break;
        block_scalars(x, d, idx, L, sq, w, ws, mt, mm, ar, flat, local, c, R);
        block_pullback(x, d, idx, L, c, hb, live, R);
        pending += L;
        if (pending >= FLUSH_ROWS) { /* float partial sums of <= 256 rows, then double */
            for (long q = 0; q < n_hb; ++q) h[q] += hb[q];
            memset(hb, 0, sizeof(float) * n_hb);
            pending = 0;
        }
    }
    for (long q = 0; q < n_hb; ++q) h[q] += hb[q];
    memcpy(stats, local, sizeof(double) * 7 * R);
}

static void range_fused(const float *x, long d, long i0, long i1, const float *sq, const float *w,
                        const float *ws, const float *mt, const float *mm, const float *a, int flat, int R,
                        double *stats, double *h, float *scratch) {
    switch (R) {
#define CASE(K) \
    case K: rows_fused(x, d, i0, i1, sq, w, ws, mt, mm, a, flat, stats, h, scratch, K); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    }
}

/* One pass shared by threads: the rows are cut into chunks that depend on n only; threads take
 * the next chunk from a counter (a slow or late thread never holds the others up), each chunk has
 * its own sums, and those are added in chunk order at the end: the result is the same bits
 * whatever the thread count or timing. */
struct pass {
    const float *x, *sq, *w, *ws, *mt, *mm, *a;
    long d, n, chunk_rows, n_chunks;
    int flat, R;
    double *chunk_stats; /* n_chunks x 7R */
    double *chunk_h;     /* n_chunks x 2Rd */
    long next;
    int failed;
};

static void *pass_worker(void *arg) {
    struct pass *P = arg;
    const long nh = 2L * P->R * P->d;
    float *scratch = malloc(sizeof(float) * nh);
    if (!scratch) {
        __atomic_store_n(&P->failed, 1, __ATOMIC_RELAXED);
        return NULL;
    }
#if defined(__SSE__)
    /* Flush denormals to zero while the kernel runs (restored after): a guard, since a tight region
     * leaves most kernel values ~0 and arithmetic on denormals can take a microcode assist per
     * operation (no effect measured on the benchmarks' data). Denormals are 30 orders of magnitude
     * below any total here. */
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
#endif
    for (;;) {
        const long c = __atomic_fetch_add(&P->next, 1, __ATOMIC_RELAXED);
        if (c >= P->n_chunks) break;
        double *st = P->chunk_stats + c * 7L * P->R;
        for (int r = 0; r < P->R; ++r) st[r * 7 + 6] = INFINITY; /* the rest is zero (calloc) */
        const long i0 = c * P->chunk_rows, i1 = i0 + P->chunk_rows < P->n ? i0 + P->chunk_rows : P->n;
        range_fused(P->x, P->d, i0, i1, P->sq, P->w, P->ws, P->mt, P->mm, P->a, P->flat, P->R, st,
                    P->chunk_h + c * nh, scratch);
    }
#if defined(__SSE__)
    _mm_setcsr(csr);
#endif
    free(scratch);
    return NULL;
}

/* The whole pass over X (n x d) for R <= 8 restarts on `threads` threads (this one included):
 * stats (R x 7) and h (2R x d) as described at the top. Returns 0; -1 for an R out of range; -2 when
 * memory for the per-chunk sums cannot be had. */
int spotlight_fused_pass(const float *x, long d, long n, const float *sq, const float *w, const float *ws,
                         const float *mt, const float *mm, const float *a, int flat, int R, int threads,
                         double *stats, double *h) {
    if (R < 1 || R > MAX_R) return -1;
    struct pass P = {x, sq, w, ws, mt, mm, a, d, n, 0, 0, flat, R, NULL, NULL, 0, 0};
    P.chunk_rows = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
    if (P.chunk_rows < MIN_CHUNK_ROWS) P.chunk_rows = MIN_CHUNK_ROWS;
    P.n_chunks = n > 0 ? (n + P.chunk_rows - 1) / P.chunk_rows : 0;
    const long nh = 2L * R * d;
    P.chunk_stats = calloc((size_t)(P.n_chunks > 0 ? P.n_chunks : 1) * 7 * R, sizeof(double));
    P.chunk_h = calloc((size_t)(P.n_chunks > 0 ? P.n_chunks : 1) * nh, sizeof(double));
    if (!P.chunk_stats || !P.chunk_h) {
        free(P.chunk_stats);
        free(P.chunk_h);
        return -2;
    }
    if (threads > P.n_chunks) threads = (int)P.n_chunks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_t th[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; ++t) {
        if (pthread_create(&th[t], NULL, pass_worker, &P) != 0) break; /* fewer threads, same result */
        started = t;
    }
    pass_worker(&P);
    for (int t = 1; t <= started; ++t) pthread_join(th[t], NULL);
    int rc = P.failed ? -2 : 0;
    for (int r = 0; r < R; ++r) {
        for (int k = 0; k < 6; ++k) stats[r * 7 + k] = 0.0;
        stats[r * 7 + 6] = INFINITY;
    }
    memset(h, 0, sizeof(double) * nh);
    for (long c = 0; c < P.n_chunks; ++c) {
        const double *st = P.chunk_stats + c * 7 * R, *hc = P.chunk_h + c * nh;
        for (int r = 0; r < R; ++r) {
            for (int k = 0; k < 6; ++k) stats[r * 7 + k] += st[r * 7 + k];
            if (st[r * 7 + 6] < stats[r * 7 + 6]) stats[r * 7 + 6] = st[r * 7 + 6];
        }
        for (long q = 0; q < nh; ++q) h[q] += hc[q];
    }
    free(P.chunk_stats);
    free(P.chunk_h);
    return rc;
}

/* vexpf on n floats, for the tests. */
void spotlight_vexpf(const float *x, float *out, long n) {
    for (long i = 0; i < n; i += VL) {
        float buf[VL] = {0};
        for (long k = 0; k < VL && i + k < n; ++k) buf[k] = x[i + k];
        const vf y = vexpf(*(const vf *)buf);
        for (long k = 0; k < VL && i + k < n; ++k) out[i + k] = y[k];
    }
}

/* The ABI version the Python side checks, so a stale cached build is never called. */
int spotlight_fused_step_abi(void) { return 3; }
