/* nanomind native decoder engine: block-quantized weights (Q4 / Q8, block 32, fp16 scales), int8 activations,
 * a Llama / Qwen2 / Qwen3 decoder forward over a preallocated KV cache, and a small thread pool.
 * The weight layout is written by src/compile/native/pack.ts; both sides keep the tensor order below. */
#ifndef NM_ENGINE_H
#define NM_ENGINE_H
#include <stddef.h>
#include <stdint.h>

#define NM_QK 32
enum { NM_Q4 = 4, NM_Q8 = 8 };

/* Q4: 32 weights as (q - 8) * d, q in 0..15; element j (< 16) in the low nibble of qs[j], j + 16 in the high one. */
typedef struct { uint16_t d; uint8_t qs[NM_QK / 2]; } nm_q4_block;  /* 18 bytes: 0.5625 B / weight */
typedef struct { uint16_t d; int8_t qs[NM_QK]; } nm_q8_block;       /* 34 bytes */
/* Activations: float scale d, 32 int8, and sum4 = 4 * sum(qs): the x86 Q4 kernels keep nibbles unsigned and take
 * the offset (sum((q - 8) x) = sum(q x) - 8 sum(x)) off in integers, half from each 128-bit lane. */
typedef struct { float d; int32_t sum4; int8_t qs[NM_QK]; } nm_a8_block;

typedef struct {
  int hidden, layers, heads, kv_heads, head_dim, inter, vocab, max_ctx, threads, fmt, qk_norm, attn_bias;
  float eps;
} nm_config;

/* Tensor order per layer (offset -1 = absent): attn_norm, q_norm, k_norm, wqkv, bqkv, wo, ffn_norm, wgu, wdown;
 * then final_norm, lm_head. wqkv rows: q heads, k heads, v heads; wgu rows: gate then up. */
enum { NM_T_ATTN_NORM, NM_T_Q_NORM, NM_T_K_NORM, NM_T_WQKV, NM_T_BQKV, NM_T_WO, NM_T_FFN_NORM, NM_T_WGU, NM_T_WDOWN, NM_T_PER_LAYER };

typedef struct nm_pool nm_pool;
typedef struct nm_model nm_model;

const char *nm_simd(void);
size_t nm_row_bytes(int fmt, int k);
float nm_half_to_float(uint16_t h);

nm_pool *nm_pool_create(int threads);
void nm_pool_free(nm_pool *p);

/* Quantizes `s` rows of k floats to activation blocks. */
void nm_quantize_act(const float *x, nm_a8_block *out, int s, int k);
/* y[s][n] = sum_k W[n][k] * x[s][k] for quantized W (rows n), activations already quantized. */
void nm_matmul(nm_pool *p, int fmt, const void *w, int n, int k, const nm_a8_block *xq, int s, float *y);

/* Returns NULL with *err set on a bad config. Copies the weights. */
nm_model *nm_model_create(const nm_config *cfg, const uint8_t *weights, size_t bytes, const double *offsets, size_t n_offsets,
                          const float *inv_freq, const char **err);
/* The same, reading the weights file straight into the engine's memory (no second copy in the caller). */
nm_model *nm_model_create_file(const nm_config *cfg, const char *path, size_t bytes, const double *offsets, size_t n_offsets,
                               const float *inv_freq, const char **err);
void nm_model_free(nm_model *m);
/* Runs s tokens at positions pos0 .. pos0 + s - 1 (the cache keeps rows < pos0). logits: vocab floats for the last
 * token, or s * vocab with all_logits. Returns NULL or an error. */
const char *nm_forward(nm_model *m, const float *embeds, int s, int pos0, float *logits, int all_logits);
/* GB/s of the best of `reps` passes summing a `bytes` buffer on `threads` threads (the benchmark's roofline). */
double nm_read_bandwidth(size_t bytes, int threads, int reps, uint64_t *checksum);
#ifdef NM_PROFILE
enum { NM_PROF_QKV, NM_PROF_ATT, NM_PROF_WO, NM_PROF_GU, NM_PROF_DOWN, NM_PROF_HEAD, NM_PROF_OTHER, NM_PROF_N };
extern double nm_prof[NM_PROF_N]; /* seconds per phase, accumulated by nm_forward */
#endif
#endif
