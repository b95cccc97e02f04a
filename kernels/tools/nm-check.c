/* The engine's C without N-API: a small driver for checks that need no Node (the arm64 cross build runs it under
 * qemu-aarch64, test/kernels/arm64.test.ts) and for profiling decode on the host.
 *
 *   nm-check simd                                 the dot-product path chosen at run time
 *   nm-check matmul FMT N K S THREADS SEED        FMT 4 | 8: random valid weight blocks and activations; prints the
 *                                                 S x N outputs, one "%.9g" per line
 *   nm-check forward FMT SEED                     a tiny random decoder (2 layers, GQA, q/k norms, biases): logits of a
 *                                                 5-token prefill then 3 decode steps, one "%.9g" per line
 *   nm-check exp                                  x, e^x and silu(x) of the engine's vector math on a grid over [-90, 90],
 *                                                 one "%.9g %.9g %.9g" line each (the test's oracle is float64)
 *   nm-check attend D LEN SEED                    one query head over LEN random cached rows of D floats (nm_attend): the
 *                                                 inputs q, K, V, then the output, "%.9g" per line (oracle: float64)
 *   nm-check bench LAYERS THREADS STEPS [FMT]     Qwen2-0.5B shape, random Q4 (or FMT 8: Q8) weights: ms per decode step
 *                                                 and, built with -DNM_PROFILE, per phase
 *
 * Setting NANOMIND_KERNELS_PORTABLE=1 selects the portable C path, so two runs compare a SIMD path with it. */
#include "../src/engine.h"
#include "../src/elementwise.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng;
static uint32_t next(void) { rng = rng * 6364136223846793005ULL + 1442695040888963407ULL; return (uint32_t)(rng >> 33); }
static float uni(void) { return (float)next() / 2147483648.f - 1.f; } /* [-1, 1) */

/* fp16 for a small positive scale in [2^-9, 2^-6): exponent 6..8, random mantissa (no NaN / Inf / subnormal) */
static uint16_t rnd_scale(void) { return (uint16_t)(((6 + next() % 3) << 10) | (next() & 0x3ff)); }

static void fill_weights(uint8_t *w, int fmt, int n, int k) {
  const size_t rb = nm_row_bytes(fmt, k);
  for (int r = 0; r < n; r++)
    for (int b = 0; b < k / NM_QK; b++) {
      uint8_t *blk = w + (size_t)r * rb + (size_t)b * (fmt == NM_Q4 ? sizeof(nm_q4_block) : sizeof(nm_q8_block));
      const uint16_t d = rnd_scale();
      memcpy(blk, &d, 2);
      const int nq = fmt == NM_Q4 ? NM_QK / 2 : NM_QK;
      for (int j = 0; j < nq; j++) blk[2 + j] = fmt == NM_Q4 ? (uint8_t)next() : (uint8_t)(int8_t)((int)(next() % 255) - 127);
    }
}

static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec; }
/* CPU time of the whole process: on a shared machine it tells kernel work from time spent waiting for a core */
static double cpu_ms(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec; }

static int cmd_matmul(int fmt, int n, int k, int s, int threads) {
  uint8_t *w = malloc((size_t)n * nm_row_bytes(fmt, k));
  float *x = malloc(sizeof(float) * (size_t)s * k), *y = malloc(sizeof(float) * (size_t)s * n);
  nm_a8_block *xq = malloc(sizeof(nm_a8_block) * (size_t)s * (k / NM_QK));
  fill_weights(w, fmt, n, k);
  for (size_t i = 0; i < (size_t)s * k; i++) x[i] = uni();
  nm_quantize_act(x, xq, s, k);
  nm_pool *p = nm_pool_create(threads);
  nm_matmul(p, fmt, w, n, k, xq, s, y);
  nm_pool_free(p);
  for (size_t i = 0; i < (size_t)s * n; i++) printf("%.9g\n", y[i]);
  free(w); free(x); free(y); free(xq);
  return 0;
}

/* Packs a random model in the engine's tensor order (engine.h), 64-byte aligned like the TypeScript packer. */
static nm_model *random_model(const nm_config *c, const char **err) {
  const int h = c->hidden, d = c->head_dim, qkv = (c->heads + 2 * c->kv_heads) * d, hd = c->heads * d;
  const size_t n_off = (size_t)c->layers * NM_T_PER_LAYER + 2;
  double *off = malloc(sizeof(double) * n_off);
  size_t sizes[NM_T_PER_LAYER] = { 4u * h, c->qk_norm ? 4u * d : 0, c->qk_norm ? 4u * d : 0, qkv * nm_row_bytes(c->fmt, h),
    c->attn_bias ? 4u * qkv : 0, h * nm_row_bytes(c->fmt, hd), 4u * h, 2u * c->inter * nm_row_bytes(c->fmt, h), h * nm_row_bytes(c->fmt, c->inter) };
  size_t at = 0;
  for (int l = 0; l < c->layers; l++)
    for (int t = 0; t < NM_T_PER_LAYER; t++) {
      if (!sizes[t]) { off[l * NM_T_PER_LAYER + t] = -1; continue; }
      off[l * NM_T_PER_LAYER + t] = (double)at;
      at = (at + sizes[t] + 63) / 64 * 64;
    }
  off[n_off - 2] = (double)at; at = (at + 4u * h + 63) / 64 * 64;
  off[n_off - 1] = (double)at; at += (size_t)c->vocab * nm_row_bytes(c->fmt, h);
  uint8_t *w = calloc(1, at);
  for (int l = 0; l < c->layers; l++)
    for (int t = 0; t < NM_T_PER_LAYER; t++) {
      const double o = off[l * NM_T_PER_LAYER + t];
      if (o < 0) continue;
      uint8_t *p = w + (size_t)o;
      if (t == NM_T_WQKV) fill_weights(p, c->fmt, qkv, h);
      else if (t == NM_T_WO) fill_weights(p, c->fmt, h, hd);
      else if (t == NM_T_WGU) fill_weights(p, c->fmt, 2 * c->inter, h);
      else if (t == NM_T_WDOWN) fill_weights(p, c->fmt, h, c->inter);
      else for (size_t i = 0; i < sizes[t] / 4; i++) ((float *)p)[i] = t == NM_T_BQKV ? 0.1f * uni() : 1.f + 0.1f * uni();
    }
  for (int i = 0; i < h; i++) ((float *)(w + (size_t)off[n_off - 2]))[i] = 1.f + 0.1f * uni();
  fill_weights(w + (size_t)off[n_off - 1], c->fmt, c->vocab, h);
  float *inv = malloc(sizeof(float) * d / 2);
  for (int j = 0; j < d / 2; j++) inv[j] = 1.f / powf(10000.f, 2.f * j / d);
  nm_model *m = nm_model_create(c, w, at, off, n_off, inv, err);
  free(w); free(off); free(inv);
  return m;
}

static int cmd_forward(int fmt) {
  const nm_config c = { .hidden = 64, .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 16, .inter = 96, .vocab = 160, .max_ctx = 16,
    .threads = 2, .fmt = fmt, .qk_norm = 1, .attn_bias = 1, .eps = 1e-6f };
  const char *err = NULL;
  nm_model *m = random_model(&c, &err);
  if (!m) { fprintf(stderr, "nm-check: %s\n", err); return 1; }
  float emb[5 * 64], logits[160];
  for (int i = 0; i < 5 * 64; i++) emb[i] = uni();
  if ((err = nm_forward(m, emb, 5, 0, logits, 0))) { fprintf(stderr, "nm-check: %s\n", err); return 1; }
  for (int i = 0; i < 160; i++) printf("%.9g\n", logits[i]);
  for (int step = 0; step < 3; step++) {
    if ((err = nm_forward(m, emb + step * 64, 1, 5 + step, logits, 0))) { fprintf(stderr, "nm-check: %s\n", err); return 1; }
    for (int i = 0; i < 160; i++) printf("%.9g\n", logits[i]);
  }
  nm_model_free(m);
  return 0;
}

static int cmd_bench(int layers, int threads, int steps, int fmt) {
  const nm_config c = { .hidden = 896, .layers = layers, .heads = 14, .kv_heads = 2, .head_dim = 64, .inter = 4864, .vocab = 151936,
    .max_ctx = steps + 40, .threads = threads, .fmt = fmt, .qk_norm = 0, .attn_bias = 0, .eps = 1e-6f };
  const char *err = NULL;
  nm_model *m = random_model(&c, &err);
  if (!m) { fprintf(stderr, "nm-check: %s\n", err); return 1; }
  float *emb = malloc(sizeof(float) * 32 * 896), *logits = malloc(sizeof(float) * 151936);
  for (int i = 0; i < 32 * 896; i++) emb[i] = 0.1f * uni();
  double t0 = now_ms(), pc0 = cpu_ms();
  nm_forward(m, emb, 32, 0, logits, 0);
  const double prefill = now_ms() - t0, prefill_cpu = cpu_ms() - pc0;
#ifdef NM_PROFILE
  { const char *names[NM_PROF_N] = { "qkv", "attention", "o_proj", "gate_up", "down", "lm_head", "other" };
    printf("prefill profile (32 tokens):");
    for (int i = 0; i < NM_PROF_N; i++) printf(" %s %.1f ms", names[i], 1e3 * nm_prof[i]);
    printf("\n"); }
#endif
#ifdef NM_PROFILE
  memset(nm_prof, 0, sizeof nm_prof);
#endif
  t0 = now_ms();
  const double c0 = cpu_ms();
  for (int i = 0; i < steps; i++) nm_forward(m, emb + (i % 32) * 896, 1, 32 + i, logits, 0);
  const double step = (now_ms() - t0) / steps, cpu = (cpu_ms() - c0) / steps;
  printf("simd %s, %d thread(s): prefill 32 tokens %.1f ms (%.0f tok/s), CPU %.1f ms; decode %.2f ms/step (%.1f tok/s), CPU %.2f ms/step\n", nm_simd(), threads,
         prefill, 32e3 / prefill, prefill_cpu, step, 1e3 / step, cpu);
#ifdef NM_PROFILE
  const char *names[NM_PROF_N] = { "qkv", "attention", "o_proj", "gate_up", "down", "lm_head", "other" };
  for (int i = 0; i < NM_PROF_N; i++) printf("  %-10s %6.3f ms/step\n", names[i], 1e3 * nm_prof[i] / steps);
#endif
  nm_model_free(m); free(emb); free(logits);
  return 0;
}

/* 8 lanes at a time through nm_silu_mul (up = 1) so the vector path is the one checked, not the scalar tail */
static int cmd_exp(void) {
  enum { N = 14400 };
  static float x[N], up[N], y[N];
  for (int i = 0; i < N; i++) { x[i] = -90.f + 180.f * (float)i / N + 1e-3f * uni(); up[i] = 1.f; }
  nm_silu_mul(y, x, up, N);
  for (int i = 0; i < N; i++) printf("%.9g %.9g %.9g\n", x[i], nm_expf(x[i]), y[i]);
  return 0;
}

static int cmd_attend(int d, int len) {
  float *q = malloc(sizeof(float) * d), *K = malloc(sizeof(float) * (size_t)len * d), *V = malloc(sizeof(float) * (size_t)len * d);
  float *out = malloc(sizeof(float) * d), *scores = malloc(sizeof(float) * len);
  for (int i = 0; i < d; i++) q[i] = 2.f * uni();
  for (size_t i = 0; i < (size_t)len * d; i++) { K[i] = uni(); V[i] = uni(); }
  nm_attend(q, K, V, len, d, 1.f / sqrtf((float)d), scores, out);
  for (int i = 0; i < d; i++) printf("%.9g\n", q[i]);
  for (size_t i = 0; i < (size_t)len * d; i++) printf("%.9g\n", K[i]);
  for (size_t i = 0; i < (size_t)len * d; i++) printf("%.9g\n", V[i]);
  for (int i = 0; i < d; i++) printf("%.9g\n", out[i]);
  free(q); free(K); free(V); free(out); free(scores);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "simd")) { puts(nm_simd()); return 0; }
  if (argc == 8 && !strcmp(argv[1], "matmul")) {
    rng = strtoull(argv[7], NULL, 10);
    return cmd_matmul(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
  }
  if (argc == 5 && !strcmp(argv[1], "attend")) { rng = strtoull(argv[4], NULL, 10); return cmd_attend(atoi(argv[2]), atoi(argv[3])); }
  if (argc == 2 && !strcmp(argv[1], "exp")) { rng = 3; return cmd_exp(); }
  if (argc == 4 && !strcmp(argv[1], "forward")) { rng = strtoull(argv[3], NULL, 10); return cmd_forward(atoi(argv[2])); }
  if ((argc == 5 || argc == 6) && !strcmp(argv[1], "bench")) { rng = 1; return cmd_bench(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), argc == 6 ? atoi(argv[5]) : NM_Q4); }
  fprintf(stderr, "usage: nm-check simd | matmul FMT N K S THREADS SEED | forward FMT SEED | exp | attend D LEN SEED | bench LAYERS THREADS STEPS [FMT]\n");
  return 2;
}
