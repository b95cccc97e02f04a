/* See engine.h. Dot-product paths are chosen once at run time: x86-64 AVX2 (AVX-512 VNNI for Q4 tiles when the CPU
 * has it), arm64 NEON with the dot-product extension or without it, else portable C. This file is compiled for the
 * baseline ISA; each SIMD function carries its own target attribute. Matrices are regrouped into 4-row tiles at
 * load (to_tiles). */
#include "engine.h"
#include "elementwise.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define NM_TILE_ROWS 4 /* rows per weight tile (to_tiles), every format and ISA */
#if defined(__x86_64__)
#include <immintrin.h>
#define NM_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>
#define NM_ARM64 1
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

/* ----------------------------------------------------------------------------------------------- fp16 */
float nm_half_to_float(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, f;
  if (e == 0) {
    if (m == 0) f = s;
    else { /* subnormal */
      float v = ldexpf((float)m, -24);
      memcpy(&f, &v, 4); f |= s;
    }
  } else if (e == 31) f = s | 0x7f800000 | (m << 13);
  else f = s | ((e + 112) << 23) | (m << 13);
  float out; memcpy(&out, &f, 4); return out;
}

size_t nm_row_bytes(int fmt, int k) {
  return (size_t)(k / NM_QK) * (fmt == NM_Q4 ? sizeof(nm_q4_block) : sizeof(nm_q8_block));
}

/* --------------------------------------------------------------------------------------- dot, C */
/* One block's integer dot product: Q4 nibbles (element j < 16 low, j + 16 high) minus 8, or Q8, with 32 int8. */
static int q4_ints(const uint8_t *qs, const int8_t *x) {
  int acc = 0;
  for (int j = 0; j < 16; j++) acc += ((qs[j] & 0x0f) - 8) * x[j] + ((qs[j] >> 4) - 8) * x[j + 16];
  return acc;
}
static int q8_ints(const uint8_t *qs, const int8_t *x) {
  int acc = 0;
  for (int j = 0; j < NM_QK; j++) acc += (int8_t)qs[j] * x[j];
  return acc;
}
static float dot_q4_c(const nm_q4_block *w, const nm_a8_block *a, int nb) {
  float sum = 0;
  for (int b = 0; b < nb; b++) sum += (float)q4_ints(w[b].qs, a[b].qs) * nm_half_to_float(w[b].d) * a[b].d;
  return sum;
}
static float dot_q8_c(const nm_q8_block *w, const nm_a8_block *a, int nb) {
  float sum = 0;
  for (int b = 0; b < nb; b++) sum += (float)q8_ints((const uint8_t *)w[b].qs, a[b].qs) * nm_half_to_float(w[b].d) * a[b].d;
  return sum;
}

/* -------------------------------------------------------------------------------------- row tiles */
/* At load the engine regroups each matrix by 4 rows: per tile and block, the 4 fp16 scales, then the 4 rows' quant
 * bytes (Q4: 16 nibble bytes, a 72-byte tile; Q8: 32 bytes, 136) -- the same bytes as 4 plain blocks, so a matrix
 * keeps its size. A kernel then loads the 4 scales at once, shares every activation load between 4 rows and
 * reduces the 4 rows' integer sums together before one float multiply-add. Rows past the last multiple of 4 stay
 * plain after the tiles. */
typedef struct { uint16_t d[NM_TILE_ROWS]; uint8_t qs[NM_TILE_ROWS][NM_QK / 2]; } nm_q4_tile;
typedef struct { uint16_t d[NM_TILE_ROWS]; int8_t qs[NM_TILE_ROWS][NM_QK]; } nm_q8_tile;

static void to_tiles(int fmt, uint8_t *dst, const uint8_t *src, int n, int k) {
  const int nb = k / NM_QK, n4 = n / NM_TILE_ROWS * NM_TILE_ROWS;
  const size_t rb = nm_row_bytes(fmt, k), bb = rb / (size_t)nb, qb = bb - 2; /* block, its quant bytes */
  uint8_t *t = dst;
  for (int r = 0; r < n4; r += NM_TILE_ROWS)
    for (int b = 0; b < nb; b++, t += NM_TILE_ROWS * bb)
      for (int i = 0; i < NM_TILE_ROWS; i++) {
        const uint8_t *blk = src + (size_t)(r + i) * rb + (size_t)b * bb;
        memcpy(t + 2 * i, blk, 2);
        memcpy(t + 2 * NM_TILE_ROWS + i * qb, blk + 2, qb);
      }
  memcpy(dst + (size_t)n4 * rb, src + (size_t)n4 * rb, (size_t)(n - n4) * rb);
}

/* The tile kernels' one signature: the 4 rows of tile `t` (nm_q4_tile or nm_q8_tile blocks) against `ntok` (1 to
 * NM_TILE_TOKENS) activation rows x + j * xs (in blocks), into y + j * ys (4 contiguous floats each). */
#define NM_TILE_TOKENS 4
typedef void (*tile_fn)(const void *t, const nm_a8_block *x, size_t xs, int ntok, int nb, float *y, size_t ys);
/* A SIMD tile kernel's entry point: `name##_t` instantiated for T = 1 .. 4 tokens (a constant, so its loops unroll). */
#define NM_TILE_ENTRY(name, attr) \
  attr static void name(const void *t, const nm_a8_block *x, size_t xs, int ntok, int nb, float *y, size_t ys) { \
    switch (ntok) { \
      case 1: name##_t(t, x, xs, nb, y, ys, 1); break; \
      case 2: name##_t(t, x, xs, nb, y, ys, 2); break; \
      case 3: name##_t(t, x, xs, nb, y, ys, 3); break; \
      default: name##_t(t, x, xs, nb, y, ys, 4); break; \
    } \
  }

/* portable C, either format: a tile block is the 4 scales then the 4 rows' quant bytes */
static void tile_c(int fmt, const uint8_t *t, const nm_a8_block *x, size_t xs, int ntok, int nb, float *y, size_t ys) {
  const size_t qb = fmt == NM_Q4 ? NM_QK / 2 : NM_QK, tb = NM_TILE_ROWS * (2 + qb);
  for (int tok = 0; tok < ntok; tok++) {
    const nm_a8_block *a = x + (size_t)tok * xs;
    float sum[NM_TILE_ROWS] = { 0 };
    for (int b = 0; b < nb; b++) {
      const uint8_t *blk = t + (size_t)b * tb, *qs = blk + 2 * NM_TILE_ROWS;
      for (int i = 0; i < NM_TILE_ROWS; i++) {
        uint16_t d; memcpy(&d, blk + 2 * i, 2);
        const int acc = fmt == NM_Q4 ? q4_ints(qs + i * qb, a[b].qs) : q8_ints(qs + i * qb, a[b].qs);
        sum[i] += (float)acc * nm_half_to_float(d) * a[b].d;
      }
    }
    memcpy(y + (size_t)tok * ys, sum, sizeof sum);
  }
}
static void q4_tile_c(const void *t, const nm_a8_block *x, size_t xs, int ntok, int nb, float *y, size_t ys) { tile_c(NM_Q4, t, x, xs, ntok, nb, y, ys); }
static void q8_tile_c(const void *t, const nm_a8_block *x, size_t xs, int ntok, int nb, float *y, size_t ys) { tile_c(NM_Q8, t, x, xs, ntok, nb, y, ys); }

/* ------------------------------------------------------------------------------------ dot, AVX2 */
#ifdef NM_X86
#define NM_AVX2 __attribute__((target("avx2,fma,f16c")))
NM_AVX2 static inline __m256 mul_sum_i8(__m256i w, __m256i a) {
  /* signed x signed via maddubs: |w| (unsigned) times a with w's sign. */
  const __m256i ax = _mm256_sign_epi8(w, w), sy = _mm256_sign_epi8(a, w);
  const __m256i d16 = _mm256_maddubs_epi16(ax, sy);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(d16, _mm256_set1_epi16(1)));
}
NM_AVX2 static inline float hsum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
/* Q4 x int8: nibbles stay unsigned (0..15) so maddubs takes them directly; sum((q - 8) x) = sum(q x) - 8 sum(x),
 * and the second term is the activation block's precomputed s. R rows share every activation load. */
NM_AVX2 static inline __m256 q4_block(const nm_q4_block *w, __m256i x, __m256i lo) {
  const __m128i raw = _mm_loadu_si128((const __m128i *)w->qs);
  const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), lo);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)));
}
/* Q4 tile helpers. A row's 16 nibble bytes are broadcast to both 128-bit lanes by the load itself, the high lane
 * shifted right by 4 (per 64-bit element; the AND drops what crosses a byte): low nibbles meet x[0..15], high ones
 * x[16..31]. The 4 rows' int16 products are paired by hadd_epi16 before widening (|4 x 15 x 128| fits int16), so
 * 4 rows cost 2 madds and 1 hadd_epi32 instead of 4 madds and 3 hadd_epi32. Result per lane: [r0 r1 r2 r3]. */
NM_AVX2 static inline __m256i q4_expand(const uint8_t *qs, __m256i shift, __m256i lo) {
  return _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs)), shift), lo);
}
NM_AVX2 static inline __m256i q4_rows4(const __m256i *q, __m256i x, __m256i ones) {
  const __m256i h01 = _mm256_hadd_epi16(_mm256_maddubs_epi16(q[0], x), _mm256_maddubs_epi16(q[1], x));
  const __m256i h23 = _mm256_hadd_epi16(_mm256_maddubs_epi16(q[2], x), _mm256_maddubs_epi16(q[3], x));
  return _mm256_hadd_epi32(_mm256_madd_epi16(h01, ones), _mm256_madd_epi16(h23, ones));
}
/* Decode streams every weight once: the hardware prefetcher alone leaves the tile walk waiting on memory, so the
 * one-token kernels ask for the tile NM_PREFETCH_TILES ahead (Q4: 2.3 KB, a 72-byte tile spans two cache lines). Not
 * the prefill instances: they are compute-bound. On the 2-core EPYC, nm-check bench at 1 thread: decode 22-25
 * ms/step without, 18.4-22 ms with (distances 6, 12, 24, 32, 48 tried; 24-48 alike). A prefetch of an address
 * past the matrix is a hint and never faults. */
#define NM_PREFETCH_TILES 32
static inline void prefetch_tile(const void *t, size_t bytes) {
  for (size_t at = 0; at < bytes; at += 64) __builtin_prefetch((const char *)t + at, 0, 3);
}
/* 4 rows x T tokens, T = 1 .. 4 a constant in each instance: per block one 64-bit scale load and the 4 rows'
 * quants made ready once for the T tokens (PREP: Q4 nibble expansion; Q8 load and |w|); per token one activation
 * load and the 4 rows' integer sums as [r0 r1 r2 r3 | r0 r1 r2 r3] partials (ROWS4), one convert and one FMA.
 * Prefill runs 4 tokens per tile pass (Q4: the expansions cost a quarter per token; the 2-token kernel before it:
 * nm-check 32-token prefill at 1 thread 273-276 -> 248-252 ms CPU). */
#define NM_X86_TILE(name, attr, tile_t, prep, rows4) \
  attr __attribute__((always_inline)) static inline void name##_t(const tile_t *t, const nm_a8_block *x, size_t xs, int nb, \
                                                                  float *y, size_t ys, const int T) { \
    __m256 acc[NM_TILE_TOKENS]; \
    for (int j = 0; j < T; j++) acc[j] = _mm256_setzero_ps(); \
    for (int b = 0; b < nb; b++) { \
      if (T == 1) prefetch_tile(t + b + NM_PREFETCH_TILES, sizeof(tile_t)); \
      const __m128 d4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)t[b].d)); \
      const __m256 d8 = _mm256_set_m128(d4, d4); \
      __m256i q[2 * NM_TILE_ROWS]; \
      prep(&t[b], q); \
      for (int j = 0; j < T; j++) { \
        const nm_a8_block *a = x + (size_t)j * xs + b; \
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(rows4(q, a)), _mm256_mul_ps(d8, _mm256_set1_ps(a->d)), acc[j]); \
      } \
    } \
    for (int j = 0; j < T; j++) \
      _mm_storeu_ps(y + (size_t)j * ys, _mm_add_ps(_mm256_castps256_ps128(acc[j]), _mm256_extractf128_ps(acc[j], 1))); \
  } \
  NM_TILE_ENTRY(name, attr)
/* Q4: nibbles stay unsigned for maddubs; the offset comes off in integers (sum4 = 4 sum(x) from each 128-bit half:
 * 8 sum(x) in all). */
NM_AVX2 static inline void prep_q4(const nm_q4_tile *t, __m256i *q) {
  const __m256i lo = _mm256_set1_epi8(0x0f), shift = _mm256_set_epi64x(4, 4, 0, 0);
  for (int i = 0; i < NM_TILE_ROWS; i++) q[i] = q4_expand(t->qs[i], shift, lo);
}
NM_AVX2 static inline __m256i rows4_q4_avx2(const __m256i *q, const nm_a8_block *a) {
  return _mm256_sub_epi32(q4_rows4(q, _mm256_loadu_si256((const __m256i *)a->qs), _mm256_set1_epi16(1)), _mm256_set1_epi32(a->sum4));
}
/* Q8: signed x signed through maddubs as |w| x (x with w's sign); each row widened to int32 before the hadd tree
 * (two products already fill an int16). */
NM_AVX2 static inline void prep_q8(const nm_q8_tile *t, __m256i *q) {
  for (int i = 0; i < NM_TILE_ROWS; i++) { q[i] = _mm256_loadu_si256((const __m256i *)t->qs[i]); q[NM_TILE_ROWS + i] = _mm256_sign_epi8(q[i], q[i]); }
}
NM_AVX2 static inline __m256i rows4_q8_avx2(const __m256i *q, const nm_a8_block *a) {
  const __m256i x = _mm256_loadu_si256((const __m256i *)a->qs), ones = _mm256_set1_epi16(1);
  __m256i p[NM_TILE_ROWS];
  for (int i = 0; i < NM_TILE_ROWS; i++) p[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(q[NM_TILE_ROWS + i], _mm256_sign_epi8(x, q[i])), ones);
  /* [r0 r1 r0 r1 | ...] pairs, then [r0 r1 r2 r3] per lane: each lane still a partial sum */
  return _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
}
NM_X86_TILE(q4_tile_avx2, NM_AVX2, nm_q4_tile, prep_q4, rows4_q4_avx2)
NM_X86_TILE(q8_tile_avx2, NM_AVX2, nm_q8_tile, prep_q8, rows4_q8_avx2)
NM_AVX2 static float dot_q4_avx2(const nm_q4_block *w, const nm_a8_block *a, int nb) {
  const __m256i lo = _mm256_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  for (int b = 0; b < nb; b++) {
    const float s = _cvtsh_ss(w[b].d) * a[b].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), q4_block(&w[b], _mm256_loadu_si256((const __m256i *)a[b].qs), lo), acc);
    corr += s * (float)(2 * a[b].sum4); /* 8 sum(x) */
  }
  return hsum(acc) - corr;
}
NM_AVX2 static float dot_q8_avx2(const nm_q8_block *w, const nm_a8_block *a, int nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < nb; b++) {
    const __m256i q = _mm256_loadu_si256((const __m256i *)w[b].qs);
    const __m256i x = _mm256_loadu_si256((const __m256i *)a[b].qs);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * a[b].d), mul_sum_i8(q, x), acc);
  }
  return hsum(acc);
}

/* ----------------------------------------------------------------------------- dot, AVX-512 VNNI */
/* The same tile walk with vpdpbusd (unsigned nibbles x signed int8, summed into int32 in one instruction) in
 * place of maddubs + madd. 256-bit forms only (AVX512VL), so no frequency licence change. Chosen when the CPU
 * reports avx512vnni and avx512vl; the development machine (AMD EPYC, AVX2 only) cannot run it: compiled and
 * dispatched, untested on hardware. */
#define NM_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
NM_VNNI static inline __m256i rows4_q4_vnni(const __m256i *q, const nm_a8_block *a) {
  const __m256i x = _mm256_loadu_si256((const __m256i *)a->qs);
  __m256i p[NM_TILE_ROWS];
  for (int i = 0; i < NM_TILE_ROWS; i++) p[i] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[i], x);
  return _mm256_sub_epi32(_mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3])), _mm256_set1_epi32(a->sum4));
}
NM_X86_TILE(q4_tile_vnni, NM_VNNI, nm_q4_tile, prep_q4, rows4_q4_vnni)
#endif

#ifdef NM_ARM64
/* ------------------------------------------------------------------------------------- dot, NEON */
/* Nibbles become signed (q - 8) before the products, so no offset term. With the dot-product extension
 * (vdotq_s32: 4 int8 products summed into each int32 lane) when the CPU has it (HWCAP_ASIMDDP, checked at run
 * time; the function carries its own target so the file builds for baseline armv8-a); else widening multiplies
 * (vmull_s8 / vmlal_s8 into int16: |2 x 8 x 127| fits) and pairwise adds. */
#define NM_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
static inline int8x16_t nib_lo(uint8x16_t raw) { return vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f))), vdupq_n_s8(8)); }
static inline int8x16_t nib_hi(uint8x16_t raw) { return vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), vdupq_n_s8(8)); }
static inline int32x4_t dot16_neon(int32x4_t acc, int8x16_t w, int8x16_t x) {
  int16x8_t p = vmull_s8(vget_low_s8(w), vget_low_s8(x));
  p = vmlal_s8(p, vget_high_s8(w), vget_high_s8(x));
  return vpadalq_s16(acc, p);
}
NM_DOTPROD static inline int32x4_t dot16_dp(int32x4_t acc, int8x16_t w, int8x16_t x) { return vdotq_s32(acc, w, x); }
static inline float32x4_t half4(const uint16_t *d) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d))); }

/* 4 rows x T tokens (T = 1 .. 4 a constant in each instance), as on x86: per block the 4 rows' quants are made
 * ready once (PREP: Q4 nibbles to signed int8 halves; Q8 the two 16-byte halves) and shared by the T tokens, each
 * of which costs two dot products per row, a pairwise-add tree to [r0 r1 r2 r3] and one FMA. Prefill runs 4
 * tokens per pass. Checked against the portable C path under qemu; no arm64 speed figure. */
static inline void prep_q4_neon(const nm_q4_tile *t, int8x16_t *w) {
  for (int i = 0; i < NM_TILE_ROWS; i++) { const uint8x16_t raw = vld1q_u8(t->qs[i]); w[2 * i] = nib_lo(raw); w[2 * i + 1] = nib_hi(raw); }
}
static inline void prep_q8_neon(const nm_q8_tile *t, int8x16_t *w) {
  for (int i = 0; i < NM_TILE_ROWS; i++) { w[2 * i] = vld1q_s8(t->qs[i]); w[2 * i + 1] = vld1q_s8(t->qs[i] + 16); }
}
#define NM_NEON_TILE(name, attr, tile_t, prep, dot) \
  attr __attribute__((always_inline)) static inline void name##_t(const tile_t *t, const nm_a8_block *x, size_t xs, int nb, \
                                                                  float *y, size_t ys, const int T) { \
    float32x4_t acc[NM_TILE_TOKENS]; \
    for (int j = 0; j < T; j++) acc[j] = vdupq_n_f32(0); \
    for (int b = 0; b < nb; b++) { \
      const float32x4_t d4 = half4(t[b].d); \
      int8x16_t w[2 * NM_TILE_ROWS]; \
      prep(&t[b], w); \
      for (int j = 0; j < T; j++) { \
        const nm_a8_block *a = x + (size_t)j * xs + b; \
        const int8x16_t x0 = vld1q_s8(a->qs), x1 = vld1q_s8(a->qs + 16); \
        int32x4_t p[NM_TILE_ROWS]; \
        for (int i = 0; i < NM_TILE_ROWS; i++) p[i] = dot(dot(vdupq_n_s32(0), w[2 * i], x0), w[2 * i + 1], x1); \
        const int32x4_t h = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3])); \
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(h), vmulq_n_f32(d4, a->d)); \
      } \
    } \
    for (int j = 0; j < T; j++) vst1q_f32(y + (size_t)j * ys, acc[j]); \
  } \
  NM_TILE_ENTRY(name, attr)
NM_NEON_TILE(q4_tile_neon, , nm_q4_tile, prep_q4_neon, dot16_neon)
NM_NEON_TILE(q4_tile_dp, NM_DOTPROD, nm_q4_tile, prep_q4_neon, dot16_dp)
NM_NEON_TILE(q8_tile_neon, , nm_q8_tile, prep_q8_neon, dot16_neon)
NM_NEON_TILE(q8_tile_dp, NM_DOTPROD, nm_q8_tile, prep_q8_neon, dot16_dp)
#endif

typedef float (*dot_fn)(const void *, const nm_a8_block *, int);
static dot_fn dot_q4 = (dot_fn)dot_q4_c, dot_q8 = (dot_fn)dot_q8_c;
static tile_fn tile_q4 = q4_tile_c, tile_q8 = q8_tile_c;
static const char *simd_name = "portable";
static pthread_once_t simd_once = PTHREAD_ONCE_INIT;
/* NANOMIND_KERNELS_PORTABLE=1 keeps the portable C path (tests compare the SIMD paths with it). */
static void pick_simd(void) {
  if (getenv("NANOMIND_KERNELS_PORTABLE")) return;
#ifdef NM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    dot_q4 = (dot_fn)dot_q4_avx2; dot_q8 = (dot_fn)dot_q8_avx2; tile_q4 = q4_tile_avx2; tile_q8 = q8_tile_avx2; simd_name = "avx2";
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) { tile_q4 = q4_tile_vnni; simd_name = "avx512vnni"; }
  }
#endif
#ifdef NM_ARM64
  if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) { tile_q4 = q4_tile_dp; tile_q8 = q8_tile_dp; simd_name = "neon-dotprod"; }
  else { tile_q4 = q4_tile_neon; tile_q8 = q8_tile_neon; simd_name = "neon"; }
#endif
}
const char *nm_simd(void) { pthread_once(&simd_once, pick_simd); return simd_name; }

/* ------------------------------------------------------------------------------------ thread pool */
/* Workers spin a little on the job generation before sleeping: a decode step dispatches ~100 jobs, and a
 * condition-variable wake per job would cost more than the work of the smaller ones. */
typedef void (*job_fn)(void *ctx, int lo, int hi);
struct nm_pool {
  int threads;
  pthread_t *tid;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  atomic_int gen, next, done, quit;
  job_fn fn; void *ctx; int n, chunk;
};

static void run_chunks(nm_pool *p) {
  for (;;) {
    int lo = atomic_fetch_add(&p->next, p->chunk);
    if (lo >= p->n) break;
    int hi = lo + p->chunk < p->n ? lo + p->chunk : p->n;
    p->fn(p->ctx, lo, hi);
  }
}

static void *worker(void *arg) {
  nm_pool *p = arg;
  int seen = 0;
  for (;;) {
    int spins = 0;
    while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) {
      if (++spins < 4000) {
#ifdef NM_X86
        _mm_pause();
#endif
        /* on a busy machine the thread that would post the next job may be waiting for this core */
        if ((spins & 255) == 0) sched_yield();
        continue;
      }
      pthread_mutex_lock(&p->mu);
      while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->quit)) return NULL;
    seen = atomic_load(&p->gen);
    run_chunks(p);
    atomic_fetch_add(&p->done, 1);
  }
}

nm_pool *nm_pool_create(int threads) {
  nm_pool *p = calloc(1, sizeof *p);
  p->threads = threads < 1 ? 1 : threads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->tid = calloc((size_t)p->threads, sizeof(pthread_t));
  for (int i = 1; i < p->threads; i++) pthread_create(&p->tid[i], NULL, worker, p);
  return p;
}

void nm_pool_free(nm_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->quit, 1);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->threads; i++) pthread_join(p->tid[i], NULL);
  free(p->tid);
  free(p);
}

/* Runs fn over [0, n) on every thread; returns when all chunks are done. */
static void pool_run(nm_pool *p, job_fn fn, void *ctx, int n, int chunk) {
  if (p->threads == 1 || n <= chunk) { fn(ctx, 0, n); return; }
  p->fn = fn; p->ctx = ctx; p->n = n; p->chunk = chunk;
  atomic_store(&p->next, 0);
  atomic_store(&p->done, 0);
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add(&p->gen, 1);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  run_chunks(p);
  for (int spins = 0; atomic_load(&p->done) < p->threads - 1; spins++) {
#ifdef NM_X86
    _mm_pause();
#endif
    if ((spins & 63) == 63) sched_yield(); /* let a descheduled worker check in */
  }
}

/* ---------------------------------------------------------------------------------------- matmul */
typedef struct { int fmt; const uint8_t *w; size_t row; int k; const nm_a8_block *x; int s; int n; float *y; } mm_ctx;
/* Rows [lo, hi) for every token; weights are in row tiles (to_tiles), lo is a multiple of 4. Tokens run inside
 * the tile loop, NM_TILE_TOKENS at a time, so a tile's bytes are read from memory once per call (prefill reuses them
 * from L1). */
static void mm_job(void *c_, int lo, int hi) {
  const mm_ctx *c = c_;
  const int nb = c->k / NM_QK, n4 = c->n / NM_TILE_ROWS * NM_TILE_ROWS;
  const tile_fn tile = c->fmt == NM_Q4 ? tile_q4 : tile_q8;
  const dot_fn dot = c->fmt == NM_Q4 ? dot_q4 : dot_q8;
  int r = lo;
  for (; r + NM_TILE_ROWS <= hi && r < n4; r += NM_TILE_ROWS)
    for (int s = 0; s < c->s; s += NM_TILE_TOKENS)
      tile(c->w + (size_t)r * c->row, c->x + (size_t)s * nb, nb, c->s - s < NM_TILE_TOKENS ? c->s - s : NM_TILE_TOKENS, nb, c->y + (size_t)s * c->n + r, c->n);
  for (; r < hi; r++)
    for (int s = 0; s < c->s; s++) c->y[(size_t)s * c->n + r] = dot(c->w + (size_t)r * c->row, c->x + (size_t)s * nb, nb);
}
/* Chunks of rows for the pool: a multiple of 16 rows (whole Q4 tiles, whole cache lines of y), about 8 per thread
 * so a thread slowed by the shared machine hands its share to the others. */
static int mm_chunk(const nm_pool *p, int n) {
  int c = n / (p->threads * 8);
  c = c < 16 ? 16 : c / 16 * 16;
  return c;
}
static void matmul_tiled(nm_pool *p, int fmt, const void *w, int n, int k, const nm_a8_block *xq, int s, float *y) {
  mm_ctx c = { fmt, w, nm_row_bytes(fmt, k), k, xq, s, n, y };
  pool_run(p, mm_job, &c, n, mm_chunk(p, n));
}
/* Test hook and standalone use: plain rows in, so they are regrouped into tiles on a copy first. */
void nm_matmul(nm_pool *p, int fmt, const void *w, int n, int k, const nm_a8_block *xq, int s, float *y) {
  nm_simd();
  const size_t bytes = (size_t)n * nm_row_bytes(fmt, k);
  uint8_t *t = malloc(bytes);
  if (!t) return;
  to_tiles(fmt, t, w, n, k);
  matmul_tiled(p, fmt, t, n, k, xq, s, y);
  free(t);
}

/* ----------------------------------------------------------------------------------------- model */
typedef struct { const float *attn_norm, *q_norm, *k_norm, *bqkv, *ffn_norm; const uint8_t *wqkv, *wo, *wgu, *wdown; } layer_w;
struct nm_model {
  nm_config c;
  uint8_t *mem;
  layer_w *L;
  const float *final_norm;
  const uint8_t *lm_head;
  float *inv_freq;
  float *kc, *vc; /* [layers][kv_heads][max_ctx][head_dim] */
  nm_pool *pool;
  /* scratch, sized for `cap` tokens */
  int cap;
  float *x, *xn, *qkv, *att, *gu, *tmp, *scores;
  float *rope_cos, *rope_sin; /* [token][head_dim / 2] for this call's positions */
  nm_a8_block *xq;
};

void nm_model_free(nm_model *m) {
  if (!m) return;
  nm_pool_free(m->pool);
  free(m->mem); free(m->L); free(m->inv_freq); free(m->kc); free(m->vc);
  free(m->x); free(m->xn); free(m->qkv); free(m->att); free(m->gu); free(m->tmp); free(m->scores); free(m->xq); free(m->rope_cos); free(m->rope_sin);
  free(m);
}

static int ensure_scratch(nm_model *m, int s) {
  if (s <= m->cap) return 1;
  const nm_config *c = &m->c;
  const int qkv = (c->heads + 2 * c->kv_heads) * c->head_dim, wide = c->inter > c->hidden ? c->inter : c->hidden;
  const int widest = wide > c->heads * c->head_dim ? wide : c->heads * c->head_dim;
  free(m->x); free(m->xn); free(m->qkv); free(m->att); free(m->gu); free(m->tmp); free(m->scores); free(m->xq); free(m->rope_cos); free(m->rope_sin);
  m->x = malloc(sizeof(float) * s * c->hidden);
  m->xn = malloc(sizeof(float) * s * widest);
  m->qkv = malloc(sizeof(float) * s * qkv);
  m->att = malloc(sizeof(float) * s * c->heads * c->head_dim);
  m->gu = malloc(sizeof(float) * s * 2 * c->inter);
  m->tmp = malloc(sizeof(float) * s * c->hidden);
  m->scores = malloc(sizeof(float) * (size_t)s * c->heads * c->max_ctx);
  m->xq = malloc(sizeof(nm_a8_block) * s * (widest / NM_QK));
  m->rope_cos = malloc(sizeof(float) * s * (c->head_dim / 2));
  m->rope_sin = malloc(sizeof(float) * s * (c->head_dim / 2));
  m->cap = s;
  return m->x && m->xn && m->qkv && m->att && m->gu && m->tmp && m->scores && m->xq && m->rope_cos && m->rope_sin;
}

/* Reads exactly `bytes` of a weights file into dst; NULL or an error. */
static const char *read_weights(const char *path, uint8_t *dst, size_t bytes) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot open the weights file";
  struct stat st;
  if (fstat(fd, &st) != 0 || (size_t)st.st_size != bytes) { close(fd); return "the weights file does not have the size the config gives"; }
  for (size_t at = 0; at < bytes;) {
    const ssize_t r = read(fd, dst + at, bytes - at > (1u << 30) ? (1u << 30) : bytes - at);
    if (r <= 0) { close(fd); return "reading the weights file failed"; }
    at += (size_t)r;
  }
  close(fd);
  return NULL;
}

static nm_model *model_create(const nm_config *cfg, const uint8_t *weights, const char *path, size_t bytes, const double *off, size_t n_off,
                              const float *inv_freq, const char **err);
nm_model *nm_model_create(const nm_config *cfg, const uint8_t *weights, size_t bytes, const double *off, size_t n_off,
                          const float *inv_freq, const char **err) {
  return model_create(cfg, weights, NULL, bytes, off, n_off, inv_freq, err);
}
nm_model *nm_model_create_file(const nm_config *cfg, const char *path, size_t bytes, const double *off, size_t n_off,
                               const float *inv_freq, const char **err) {
  return model_create(cfg, NULL, path, bytes, off, n_off, inv_freq, err);
}
static nm_model *model_create(const nm_config *cfg, const uint8_t *weights, const char *path, size_t bytes, const double *off, size_t n_off,
                              const float *inv_freq, const char **err) {
  const nm_config *c = cfg;
  nm_simd();
  if (c->fmt != NM_Q4 && c->fmt != NM_Q8) { *err = "fmt must be 4 or 8"; return NULL; }
  if (c->hidden % NM_QK || c->inter % NM_QK || (c->heads * c->head_dim) % NM_QK) { *err = "hidden, intermediate and heads*head_dim must be multiples of 32"; return NULL; }
  if (c->heads <= 0 || c->kv_heads <= 0 || c->heads % c->kv_heads || c->head_dim % 2 || c->max_ctx <= 0) { *err = "bad head counts, head_dim or max_ctx"; return NULL; }
  if (n_off != (size_t)c->layers * NM_T_PER_LAYER + 2) { *err = "offset table has the wrong length"; return NULL; }
  const size_t qkv_rows = (size_t)(c->heads + 2 * c->kv_heads) * c->head_dim, hd = (size_t)c->heads * c->head_dim;
  nm_model *m = calloc(1, sizeof *m);
  m->c = *c;
  m->mem = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!m->mem) { *err = "out of memory for weights"; nm_model_free(m); return NULL; }
  if (weights) memcpy(m->mem, weights, bytes);
  else if ((*err = read_weights(path, m->mem, bytes))) { nm_model_free(m); return NULL; }
  /* every tensor: offset + size within the buffer, floats 4-aligned */
  #define AT(i, size, dst, type) do { double o_ = off[i]; \
    if (o_ < 0) { dst = NULL; break; } \
    if (o_ + (double)(size) > (double)bytes || ((size_t)o_ & 3)) { *err = "tensor offset out of range or misaligned"; nm_model_free(m); return NULL; } \
    dst = (type)(m->mem + (size_t)o_); } while (0)
  m->L = calloc((size_t)c->layers, sizeof(layer_w));
  for (int l = 0; l < c->layers; l++) {
    const double *o = off + (size_t)l * NM_T_PER_LAYER;
    layer_w *L = &m->L[l];
    (void)o;
    AT(l * NM_T_PER_LAYER + NM_T_ATTN_NORM, 4 * c->hidden, L->attn_norm, const float *);
    AT(l * NM_T_PER_LAYER + NM_T_Q_NORM, 4 * c->head_dim, L->q_norm, const float *);
    AT(l * NM_T_PER_LAYER + NM_T_K_NORM, 4 * c->head_dim, L->k_norm, const float *);
    AT(l * NM_T_PER_LAYER + NM_T_WQKV, qkv_rows * nm_row_bytes(c->fmt, c->hidden), L->wqkv, const uint8_t *);
    AT(l * NM_T_PER_LAYER + NM_T_BQKV, 4 * qkv_rows, L->bqkv, const float *);
    AT(l * NM_T_PER_LAYER + NM_T_WO, (size_t)c->hidden * nm_row_bytes(c->fmt, (int)hd), L->wo, const uint8_t *);
    AT(l * NM_T_PER_LAYER + NM_T_FFN_NORM, 4 * c->hidden, L->ffn_norm, const float *);
    AT(l * NM_T_PER_LAYER + NM_T_WGU, 2 * (size_t)c->inter * nm_row_bytes(c->fmt, c->hidden), L->wgu, const uint8_t *);
    AT(l * NM_T_PER_LAYER + NM_T_WDOWN, (size_t)c->hidden * nm_row_bytes(c->fmt, c->inter), L->wdown, const uint8_t *);
    if (!L->attn_norm || !L->wqkv || !L->wo || !L->ffn_norm || !L->wgu || !L->wdown || (c->qk_norm && (!L->q_norm || !L->k_norm)) || (c->attn_bias && !L->bqkv)) {
      *err = "a required layer tensor is missing"; nm_model_free(m); return NULL;
    }
  }
  const size_t fo = (size_t)c->layers * NM_T_PER_LAYER;
  AT(fo, 4 * c->hidden, m->final_norm, const float *);
  AT(fo + 1, (size_t)c->vocab * nm_row_bytes(c->fmt, c->hidden), m->lm_head, const uint8_t *);
  #undef AT
  if (!m->final_norm || !m->lm_head) { *err = "final norm or lm_head missing"; nm_model_free(m); return NULL; }
  { /* regroup every matrix into row tiles, in place through one scratch copy */
    const size_t rh = nm_row_bytes(c->fmt, c->hidden), sizes[5] = { (size_t)c->vocab * rh, 2 * (size_t)c->inter * rh, qkv_rows * rh,
      (size_t)c->hidden * nm_row_bytes(c->fmt, c->inter), (size_t)c->hidden * nm_row_bytes(c->fmt, (int)hd) };
    size_t big = 0;
    for (int i = 0; i < 5; i++) if (sizes[i] > big) big = sizes[i];
    uint8_t *tmp = malloc(big);
    if (!tmp) { *err = "out of memory repacking the weights"; nm_model_free(m); return NULL; }
    #define TILE(ptr, n, k) do { const size_t b_ = (size_t)(n) * nm_row_bytes(c->fmt, k); memcpy(tmp, ptr, b_); to_tiles(c->fmt, (uint8_t *)(ptr), tmp, n, k); } while (0)
    for (int l = 0; l < c->layers; l++) {
      const layer_w *L = &m->L[l];
      TILE(L->wqkv, qkv_rows, c->hidden); TILE(L->wo, c->hidden, hd); TILE(L->wgu, 2 * c->inter, c->hidden); TILE(L->wdown, c->hidden, c->inter);
    }
    TILE(m->lm_head, c->vocab, c->hidden);
    #undef TILE
    free(tmp);
  }
  m->inv_freq = malloc(sizeof(float) * c->head_dim / 2);
  memcpy(m->inv_freq, inv_freq, sizeof(float) * c->head_dim / 2);
  const size_t kv = (size_t)c->layers * c->kv_heads * c->max_ctx * c->head_dim;
  m->kc = malloc(sizeof(float) * kv);
  m->vc = malloc(sizeof(float) * kv);
  if (!m->kc || !m->vc || !ensure_scratch(m, 1)) { *err = "out of memory for the KV cache"; nm_model_free(m); return NULL; }
  m->pool = nm_pool_create(c->threads);
  return m;
}

/* attention for (token, head) pairs: causal over the cache, GQA head sharing */
typedef struct { nm_model *m; int l, s, pos0; } att_ctx;
static void att_job(void *c_, int lo, int hi) {
  const att_ctx *a = c_;
  const nm_config *c = &a->m->c;
  const int d = c->head_dim, H = c->heads, rep = c->heads / c->kv_heads, qkv = (H + 2 * c->kv_heads) * d;
  const float scale = 1.f / sqrtf((float)d);
  for (int j = lo; j < hi; j++) {
    const int t = j / H, h = j % H, kvh = h / rep, len = a->pos0 + t + 1;
    const float *q = a->m->qkv + (size_t)t * qkv + (size_t)h * d;
    const size_t base = ((size_t)a->l * c->kv_heads + kvh) * c->max_ctx * d;
    const float *K = a->m->kc + base, *V = a->m->vc + base;
    nm_attend(q, K, V, len, d, scale, a->m->scores + (size_t)j * c->max_ctx, a->m->att + (size_t)t * H * d + (size_t)h * d);
  }
}

/* Phase timers for kernels/tools/nm-check.c's `bench` (compiled in only with -DNM_PROFILE). */
#ifdef NM_PROFILE
double nm_prof[NM_PROF_N];
static double prof_t;
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }
#define PROF(i) do { const double t_ = now_s(); nm_prof[i] += t_ - prof_t; prof_t = t_; } while (0)
#define PROF_START() (prof_t = now_s())
#else
#define PROF(i) ((void)0)
#define PROF_START() ((void)0)
#endif

const char *nm_forward(nm_model *m, const float *embeds, int s, int pos0, float *logits, int all_logits) {
  const nm_config *c = &m->c;
  if (s <= 0 || pos0 < 0 || pos0 + s > c->max_ctx) return "tokens do not fit the preallocated KV cache";
  if (!ensure_scratch(m, s)) return "out of memory for scratch buffers";
  const int h = c->hidden, d = c->head_dim, H = c->heads, KV = c->kv_heads, I = c->inter, hd = H * d;
  const int qkv = (H + 2 * KV) * d;
  memcpy(m->x, embeds, sizeof(float) * s * h);
  PROF_START();
  for (int t = 0; t < s; t++) nm_rope_table(m->rope_cos + (size_t)t * (d / 2), m->rope_sin + (size_t)t * (d / 2), m->inv_freq, d / 2, pos0 + t);
  for (int l = 0; l < c->layers; l++) {
    const layer_w *L = &m->L[l];
    for (int t = 0; t < s; t++) nm_rmsnorm(m->xn + (size_t)t * h, m->x + (size_t)t * h, L->attn_norm, h, c->eps);
    nm_quantize_act(m->xn, m->xq, s, h);
    PROF(NM_PROF_OTHER);
    matmul_tiled(m->pool, c->fmt, L->wqkv, qkv, h, m->xq, s, m->qkv);
    PROF(NM_PROF_QKV);
    for (int t = 0; t < s; t++) {
      float *r = m->qkv + (size_t)t * qkv;
      if (L->bqkv) for (int i = 0; i < qkv; i++) r[i] += L->bqkv[i];
      for (int hh = 0; hh < H + KV; hh++) {
        float *v = r + (size_t)hh * d;
        if (L->q_norm) nm_rmsnorm(v, v, hh < H ? L->q_norm : L->k_norm, d, c->eps);
        nm_rope(v, m->rope_cos + (size_t)t * (d / 2), m->rope_sin + (size_t)t * (d / 2), d / 2);
      }
      for (int g = 0; g < KV; g++) {
        const size_t at = (((size_t)l * KV + g) * c->max_ctx + pos0 + t) * d;
        memcpy(m->kc + at, r + (size_t)(H + g) * d, sizeof(float) * d);
        memcpy(m->vc + at, r + (size_t)(H + KV + g) * d, sizeof(float) * d);
      }
    }
    PROF(NM_PROF_OTHER);
    att_ctx ac = { m, l, s, pos0 };
    pool_run(m->pool, att_job, &ac, s * H, 1);
    PROF(NM_PROF_ATT);
    nm_quantize_act(m->att, m->xq, s, hd);
    PROF(NM_PROF_OTHER);
    matmul_tiled(m->pool, c->fmt, L->wo, h, hd, m->xq, s, m->tmp);
    PROF(NM_PROF_WO);
    for (size_t i = 0; i < (size_t)s * h; i++) m->x[i] += m->tmp[i];
    for (int t = 0; t < s; t++) nm_rmsnorm(m->xn + (size_t)t * h, m->x + (size_t)t * h, L->ffn_norm, h, c->eps);
    nm_quantize_act(m->xn, m->xq, s, h);
    PROF(NM_PROF_OTHER);
    matmul_tiled(m->pool, c->fmt, L->wgu, 2 * I, h, m->xq, s, m->gu);
    PROF(NM_PROF_GU);
    for (int t = 0; t < s; t++) {
      const float *g = m->gu + (size_t)t * 2 * I;
      nm_silu_mul(m->xn + (size_t)t * I, g, g + I, I);
    }
    nm_quantize_act(m->xn, m->xq, s, I);
    PROF(NM_PROF_OTHER);
    matmul_tiled(m->pool, c->fmt, L->wdown, h, I, m->xq, s, m->tmp);
    PROF(NM_PROF_DOWN);
    for (size_t i = 0; i < (size_t)s * h; i++) m->x[i] += m->tmp[i];
  }
  const int first = all_logits ? 0 : s - 1, n = s - first;
  for (int t = 0; t < n; t++) nm_rmsnorm(m->xn + (size_t)t * h, m->x + (size_t)(first + t) * h, m->final_norm, h, c->eps);
  nm_quantize_act(m->xn, m->xq, n, h);
  PROF(NM_PROF_OTHER);
  matmul_tiled(m->pool, c->fmt, m->lm_head, c->vocab, h, m->xq, n, logits);
  PROF(NM_PROF_HEAD);
  return NULL;
}

/* ------------------------------------------------------------------------------ read bandwidth probe */
/* The benchmark's roofline: GB/s for summing a large buffer with the engine's own pool (the same threads a decode
 * step uses). AVX2 loads where available, 4 independent accumulators so the loads, not the adds, set the pace. */
typedef struct { const uint64_t *buf; size_t words_per_chunk, words; uint64_t sums[64 * 8]; } bw_ctx;
#ifdef NM_X86
NM_AVX2 static uint64_t sum_words_avx2(const uint64_t *p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
  }
  a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t t[4]; _mm256_storeu_si256((__m256i *)t, a0);
  uint64_t s = t[0] + t[1] + t[2] + t[3];
  for (; i < n; i++) s += p[i];
  return s;
}
#endif
static uint64_t sum_words(const uint64_t *p, size_t n) {
#ifdef NM_X86
  if (__builtin_cpu_supports("avx2")) return sum_words_avx2(p, n);
#endif
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) { s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]; }
  for (; i < n; i++) s0 += p[i];
  return s0 + s1 + s2 + s3;
}
static void bw_job(void *c_, int lo, int hi) {
  bw_ctx *c = c_;
  for (int j = lo; j < hi; j++) {
    const size_t a = (size_t)j * c->words_per_chunk, n = a + c->words_per_chunk > c->words ? c->words - a : c->words_per_chunk;
    c->sums[(j % 64) * 8] += sum_words(c->buf + a, n); /* 64-byte apart: no false sharing between workers */
  }
}
double nm_read_bandwidth(size_t bytes, int threads, int reps, uint64_t *checksum) {
  nm_simd();
  bw_ctx *c = calloc(1, sizeof *c);
  const size_t words = bytes / 8;
  uint64_t *buf = aligned_alloc(64, words * 8);
  if (!c || !buf) { free(c); free(buf); return -1; }
  for (size_t i = 0; i < words; i++) buf[i] = i; /* touch every page before timing */
  c->buf = buf; c->words = words; c->words_per_chunk = 1 << 18; /* 2 MB chunks */
  const int chunks = (int)((words + c->words_per_chunk - 1) / c->words_per_chunk);
  nm_pool *p = nm_pool_create(threads);
  double best = 0;
  for (int r = 0; r < reps; r++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pool_run(p, bw_job, c, chunks, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (bytes / s > best) best = (double)bytes / s;
  }
  uint64_t sum = 0;
  for (int i = 0; i < 64; i++) sum += c->sums[i * 8];
  if (checksum) *checksum = sum;
  nm_pool_free(p);
  free(buf); free(c);
  return best / 1e9;
}

