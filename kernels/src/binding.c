/* N-API surface of the engine (plain C node_api.h, no node-addon-api). Every pointer stays inside this file:
 * JS holds a model as an external with a finalizer. See src/run/backends/native/addon.ts for the typed side. */
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine.h"

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, "E_NATIVE", #call " failed"); return NULL; } } while (0)
#define THROW(msg) do { napi_throw_error(env, "E_NATIVE", msg); return NULL; } while (0)

static int get_int(napi_env env, napi_value obj, const char *key, int *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return 0;
  return napi_get_value_int32(env, v, out) == napi_ok;
}

static void *typed(napi_env env, napi_value v, napi_typedarray_type want, size_t *len) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return NULL;
  napi_typedarray_type t; void *data; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, &data, &ab, &off) != napi_ok || t != want) return NULL;
  return data;
}

static void finalize_model(napi_env env, void *data, void *hint) { (void)env; (void)hint; nm_model_free(data); }

/* create(config, weights: Uint8Array, offsets: Float64Array, invFreq: Float32Array) → external */
static napi_value create(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value a[4];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 4) THROW("create(config, weights, offsets, invFreq)");
  nm_config c; memset(&c, 0, sizeof c);
  double eps;
  napi_value ev;
  if (!get_int(env, a[0], "hidden", &c.hidden) || !get_int(env, a[0], "layers", &c.layers) || !get_int(env, a[0], "heads", &c.heads)
      || !get_int(env, a[0], "kvHeads", &c.kv_heads) || !get_int(env, a[0], "headDim", &c.head_dim) || !get_int(env, a[0], "intermediate", &c.inter)
      || !get_int(env, a[0], "vocab", &c.vocab) || !get_int(env, a[0], "maxContext", &c.max_ctx) || !get_int(env, a[0], "threads", &c.threads)
      || !get_int(env, a[0], "bits", &c.fmt) || !get_int(env, a[0], "qkNorm", &c.qk_norm) || !get_int(env, a[0], "attnBias", &c.attn_bias)
      || napi_get_named_property(env, a[0], "rmsEps", &ev) != napi_ok || napi_get_value_double(env, ev, &eps) != napi_ok)
    THROW("config needs integer hidden, layers, heads, kvHeads, headDim, intermediate, vocab, maxContext, threads, bits, qkNorm, attnBias and number rmsEps");
  c.eps = (float)eps;
  size_t nw = 0, no, nf;
  /* weights: the bytes (Uint8Array), or { path, bytes } to read the file in C without a JS-side copy */
  napi_valuetype wt;
  CHECK(napi_typeof(env, a[1], &wt));
  char path[4096] = "";
  const uint8_t *w = NULL;
  if (wt == napi_object && !typed(env, a[1], napi_uint8_array, &nw)) {
    napi_value pv, bv; double bytes = -1; size_t len = 0;
    if (napi_get_named_property(env, a[1], "path", &pv) != napi_ok || napi_get_value_string_utf8(env, pv, path, sizeof path, &len) != napi_ok
        || len == 0 || len >= sizeof path - 1 || napi_get_named_property(env, a[1], "bytes", &bv) != napi_ok
        || napi_get_value_double(env, bv, &bytes) != napi_ok || bytes <= 0) THROW("weights must be a Uint8Array or { path, bytes }");
    nw = (size_t)bytes;
  } else w = typed(env, a[1], napi_uint8_array, &nw);
  const double *off = typed(env, a[2], napi_float64_array, &no);
  const float *inv = typed(env, a[3], napi_float32_array, &nf);
  if ((!w && !path[0]) || !off || !inv) THROW("weights must be a Uint8Array or { path, bytes }, offsets a Float64Array, invFreq a Float32Array");
  if (c.head_dim <= 0 || nf != (size_t)c.head_dim / 2) THROW("invFreq must hold headDim / 2 values");
  const char *err = NULL;
  nm_model *m = w ? nm_model_create(&c, w, nw, off, no, inv, &err) : nm_model_create_file(&c, path, nw, off, no, inv, &err);
  if (!m) THROW(err);
  napi_value ext;
  CHECK(napi_create_external(env, m, finalize_model, NULL, &ext));
  return ext;
}

static nm_model *model_of(napi_env env, napi_value v) {
  void *m = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &m) != napi_ok) return NULL;
  return m;
}

/* forward(model, embeds: Float32Array [s * hidden], s, pos0, logits: Float32Array, allLogits: boolean) */
static napi_value forward(napi_env env, napi_callback_info info) {
  size_t argc = 6; napi_value a[6];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 6) THROW("forward(model, embeds, s, pos0, logits, allLogits)");
  nm_model *m = model_of(env, a[0]);
  if (!m) THROW("not a model");
  size_t ne, nl; int s, pos0; bool all;
  const float *e = typed(env, a[1], napi_float32_array, &ne);
  float *lg = typed(env, a[4], napi_float32_array, &nl);
  if (!e || !lg || napi_get_value_int32(env, a[2], &s) != napi_ok || napi_get_value_int32(env, a[3], &pos0) != napi_ok
      || napi_get_value_bool(env, a[5], &all) != napi_ok) THROW("bad forward arguments");
  const nm_config *c = (const nm_config *)m; /* nm_model starts with its config */
  if (s <= 0 || ne != (size_t)s * c->hidden) THROW("embeds must hold s * hidden floats");
  if (nl != (size_t)(all ? s : 1) * c->vocab) THROW("logits must hold (allLogits ? s : 1) * vocab floats");
  const char *err = nm_forward(m, e, s, pos0, lg, all);
  if (err) THROW(err);
  return NULL;
}

/* matmul(bits, weights: Uint8Array, n, k, x: Float32Array [s * k], s, threads) → Float32Array [s * n]; a test hook
 * for the dot-product kernels through the same quantize + dispatch path the model uses. */
static napi_value matmul(napi_env env, napi_callback_info info) {
  size_t argc = 7; napi_value a[7];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 7) THROW("matmul(bits, weights, n, k, x, s, threads)");
  int bits, n, k, s, threads; size_t nw, nx;
  if (napi_get_value_int32(env, a[0], &bits) != napi_ok || napi_get_value_int32(env, a[2], &n) != napi_ok
      || napi_get_value_int32(env, a[3], &k) != napi_ok || napi_get_value_int32(env, a[5], &s) != napi_ok
      || napi_get_value_int32(env, a[6], &threads) != napi_ok) THROW("bad matmul arguments");
  const uint8_t *w = typed(env, a[1], napi_uint8_array, &nw);
  const float *x = typed(env, a[4], napi_float32_array, &nx);
  if ((bits != 4 && bits != 8) || n <= 0 || k <= 0 || k % NM_QK || s <= 0 || !w || !x) THROW("bad matmul arguments");
  if (nw != (size_t)n * nm_row_bytes(bits, k) || nx != (size_t)s * k) THROW("weights or x have the wrong size");
  nm_a8_block *xq = malloc(sizeof(nm_a8_block) * (size_t)s * (k / NM_QK));
  napi_value ab, out; void *y;
  CHECK(napi_create_arraybuffer(env, sizeof(float) * (size_t)s * n, &y, &ab));
  CHECK(napi_create_typedarray(env, napi_float32_array, (size_t)s * n, ab, 0, &out));
  nm_quantize_act(x, xq, s, k);
  nm_pool *p = nm_pool_create(threads);
  nm_matmul(p, bits, w, n, k, xq, s, y);
  nm_pool_free(p);
  free(xq);
  return out;
}

static napi_value simd(napi_env env, napi_callback_info info) {
  (void)info; napi_value v;
  CHECK(napi_create_string_utf8(env, nm_simd(), NAPI_AUTO_LENGTH, &v));
  return v;
}

static napi_value bandwidth(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  double mb = 0; int threads = 1, reps = 1;
  if (argc < 3 || napi_get_value_double(env, a[0], &mb) != napi_ok || napi_get_value_int32(env, a[1], &threads) != napi_ok
      || napi_get_value_int32(env, a[2], &reps) != napi_ok || mb < 1 || threads < 1 || reps < 1) THROW("bandwidth(megabytes, threads, reps)");
  uint64_t sum = 0;
  const double gbs = nm_read_bandwidth((size_t)(mb * 1e6) / 64 * 64, threads, reps, &sum);
  if (gbs < 0) THROW("out of memory for the bandwidth buffer");
  napi_value v;
  CHECK(napi_create_double(env, gbs, &v));
  return v;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor p[] = {
    { "create", NULL, create, NULL, NULL, NULL, napi_default, NULL },
    { "forward", NULL, forward, NULL, NULL, NULL, napi_default, NULL },
    { "matmul", NULL, matmul, NULL, NULL, NULL, napi_default, NULL },
    { "simd", NULL, simd, NULL, NULL, NULL, napi_default, NULL },
    { "bandwidth", NULL, bandwidth, NULL, NULL, NULL, napi_default, NULL },
  };
  if (napi_define_properties(env, exports, 5, p) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
