/* The engine's float work outside the matrix products (elementwise.c). nm_quantize_act is declared in engine.h. */
#ifndef NM_ELEMENTWISE_H
#define NM_ELEMENTWISE_H
#include "engine.h"

/* e^x to within 2 ulp of expf for x in [-87, 88] (clamped outside) */
float nm_expf(float x);
void nm_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* out[i] = silu(gate[i]) * up[i] */
void nm_silu_mul(float *out, const float *gate, const float *up, int n);
/* cos / sin of pos * inv_freq[i] for i < half: computed once per position, shared by every head and layer */
void nm_rope_table(float *cs, float *sn, const float *inv_freq, int half, int pos);
/* rotate-half RoPE of one head of 2 * half floats, in place */
void nm_rope(float *v, const float *cs, const float *sn, int half);
/* softmax(q . K^T * scale) V for one query head over `len` cached rows of d floats; scores: len floats of scratch */
void nm_attend(const float *q, const float *K, const float *V, int len, int d, float scale, float *scores, float *out);
#endif
