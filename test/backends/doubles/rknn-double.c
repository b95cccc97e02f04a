/*
 * A contract double of librknnrt.so (rknn-toolkit2 v2.x rknn_api.h): the same symbols and struct layouts,
 * a known computation, and a log of every call with the arguments it received, for
 * test/backends/rknn.test.ts to assert on. Not Rockchip's code: written from the documented layouts.
 *
 * The "model" is bytes starting with "RKNNDBL1". It has one input [1,3,2,2] (int8 affine, NHWC natively)
 * and one output [1,12] (int8 affine, zp -3, scale 0.05) computing y = 2x + 1 on the input values.
 * Log lines go to $RKNN_DOUBLE_LOG. $RKNN_DOUBLE_INIT_RC makes rknn_init return that code.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

typedef uint64_t rknn_context;
typedef struct { uint32_t n_input, n_output; } rknn_input_output_num;
typedef struct {
  uint32_t index, n_dims, dims[16]; char name[256]; uint32_t n_elems, size; int fmt, type, qnt_type;
  int8_t fl; int32_t zp; float scale; uint32_t w_stride, size_with_stride; uint8_t pass_through; uint32_t h_stride;
} rknn_tensor_attr;
typedef struct { void *virt_addr; uint64_t phys_addr; int32_t fd, offset; uint32_t size, flags; void *priv_data; } rknn_tensor_mem;
typedef struct { uint32_t index; void *buf; uint32_t size; uint8_t pass_through; int type, fmt; } rknn_input;
typedef struct { uint8_t want_float, is_prealloc; uint32_t index; void *buf; uint32_t size; } rknn_output;
typedef struct { char api_version[256], drv_version[256]; } rknn_sdk_version;

#define N 12
static FILE *logf_;
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void say(const char *fmt, ...) {
  if (!logf_) { const char *p = getenv("RKNN_DOUBLE_LOG"); logf_ = p ? fopen(p, "a") : stderr; }
  va_list ap; va_start(ap, fmt); vfprintf(logf_, fmt, ap); va_end(ap); fputc('\n', logf_); fflush(logf_);
}

static int live = 0;              /* the one context: 0x5eed while alive */
static const rknn_context CTX = 0x5eed;
static rknn_tensor_mem *mems[8]; static int n_mems = 0, created = 0;
static rknn_tensor_mem *in_mem, *out_mem;
static rknn_tensor_attr in_set, out_set;   /* what rknn_set_io_mem was given */
static float pending[N]; static int have_input = 0;

static int ours(rknn_tensor_mem *m) { for (int i = 0; i < n_mems; i++) if (mems[i] == m) return 1; return 0; }
static float half_to_float(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, f = h & 1023;
  float v = e == 0 ? ldexpf((float)f, -24) : ldexpf((float)(f | 1024), e - 25);
  return s ? -v : v;
}
static int8_t quantize(float y) { long q = lroundf(y / 0.05f) - 3; return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q); }

int rknn_init(rknn_context *ctx, void *model, uint32_t size, uint32_t flag, void *extend) {
  say("sizes attr=%zu num=%zu mem=%zu input=%zu output=%zu sdk=%zu attr.zp@%zu attr.scale@%zu attr.pass_through@%zu attr.h_stride@%zu",
      sizeof(rknn_tensor_attr), sizeof(rknn_input_output_num), sizeof(rknn_tensor_mem), sizeof(rknn_input), sizeof(rknn_output),
      sizeof(rknn_sdk_version), offsetof(rknn_tensor_attr, zp), offsetof(rknn_tensor_attr, scale),
      offsetof(rknn_tensor_attr, pass_through), offsetof(rknn_tensor_attr, h_stride));
  const char *rc = getenv("RKNN_DOUBLE_INIT_RC");
  say("rknn_init size=%u flag=%u extend=%s magic=%s", size, flag, extend ? "set" : "null", size >= 8 && !memcmp(model, "RKNNDBL1", 8) ? "ok" : "bad");
  if (rc) return atoi(rc);
  if (size < 8 || memcmp(model, "RKNNDBL1", 8)) return -6;
  live = 1; *ctx = CTX; return 0;
}

static void fill(rknn_tensor_attr *a, int input) {
  uint32_t idx = a->index;
  memset(a, 0, sizeof *a);
  a->index = idx;
  if (input) { a->n_dims = 4; a->dims[0] = 1; a->dims[1] = 2; a->dims[2] = 2; a->dims[3] = 3; a->fmt = 1; strcpy(a->name, "pixel_values"); }
  else { a->n_dims = 2; a->dims[0] = 1; a->dims[1] = N; a->fmt = 3; strcpy(a->name, "image_features"); }
  a->n_elems = N; a->size = N; a->type = 2; a->qnt_type = 2; a->zp = input ? 0 : -3; a->scale = input ? 0.02f : 0.05f;
  a->size_with_stride = N; a->w_stride = 2;
}

int rknn_query(rknn_context ctx, int cmd, void *info, uint32_t size) {
  say("rknn_query ctx=%s cmd=%d size=%u index=%u", ctx == CTX && live ? "ok" : "bad", cmd, size, cmd == 1 || cmd == 2 ? *(uint32_t *)info : 0);
  if (ctx != CTX || !live) return -7;
  switch (cmd) {
    case 0: if (size != sizeof(rknn_input_output_num)) return -5; ((rknn_input_output_num *)info)->n_input = 1; ((rknn_input_output_num *)info)->n_output = 1; return 0;
    case 1: case 2: if (size != sizeof(rknn_tensor_attr)) return -5; if (*(uint32_t *)info != 0) return -5; fill(info, cmd == 1); return 0;
    case 5: if (size != sizeof(rknn_sdk_version)) return -5; strcpy(((rknn_sdk_version *)info)->api_version, "2.3.2 (double)"); strcpy(((rknn_sdk_version *)info)->drv_version, "0.9.8 (double)"); return 0;
    default: return -5;
  }
}

int rknn_set_core_mask(rknn_context ctx, int mask) {
  say("rknn_set_core_mask ctx=%s mask=%d", ctx == CTX && live ? "ok" : "bad", mask);
  return ctx == CTX && live ? 0 : -7;
}

rknn_tensor_mem *rknn_create_mem(rknn_context ctx, uint32_t size) {
  if (ctx != CTX || !live || n_mems == 8) { say("rknn_create_mem ctx=bad"); return NULL; }
  rknn_tensor_mem *m = calloc(1, sizeof *m);
  m->virt_addr = calloc(1, size); m->size = size; m->flags = 1; m->fd = 100 + created++;
  mems[n_mems++] = m;
  say("rknn_create_mem size=%u -> mem%d", size, m->fd - 100);
  return m;
}

static int slot(rknn_tensor_mem *m) { for (int i = 0; i < n_mems; i++) if (mems[i] == m) return i; return -1; }
/* The stable id a log line names a memory by (its creation order); -1 for a pointer this library did not give out. */
static int mem_id(rknn_tensor_mem *m) { return slot(m) < 0 ? -1 : m->fd - 100; }

int rknn_set_io_mem(rknn_context ctx, rknn_tensor_mem *mem, rknn_tensor_attr *attr) {
  say("rknn_set_io_mem ctx=%s mem%d name=%s index=%u type=%d fmt=%d pass_through=%u qnt=%d zp=%d scale=%.3f mem.size=%u",
      ctx == CTX && live ? "ok" : "bad", mem_id(mem), attr->name, attr->index, attr->type, attr->fmt, attr->pass_through, attr->qnt_type, attr->zp, attr->scale, mem ? mem->size : 0);
  if (ctx != CTX || !live) return -7;
  if (!ours(mem)) return -5;
  if (!strcmp(attr->name, "pixel_values")) { in_mem = mem; in_set = *attr; if (mem->size < N * (attr->type == 1 ? 2 : 4)) return -8; }
  else { out_mem = mem; out_set = *attr; if (mem->size < N) return -9; }
  return 0;
}

int rknn_inputs_set(rknn_context ctx, uint32_t n, rknn_input *inputs) {
  say("rknn_inputs_set ctx=%s n=%u index=%u size=%u pass_through=%u type=%d fmt=%d", ctx == CTX && live ? "ok" : "bad", n, inputs[0].index, inputs[0].size, inputs[0].pass_through, inputs[0].type, inputs[0].fmt);
  if (ctx != CTX || !live) return -7;
  if (n != 1 || inputs[0].type != 0 || inputs[0].size != N * 4) return -8;
  memcpy(pending, inputs[0].buf, N * 4); have_input = 1;  /* the runtime copies at set time */
  return 0;
}

int rknn_run(rknn_context ctx, void *extend) {
  say("rknn_run ctx=%s extend=%s", ctx == CTX && live ? "ok" : "bad", extend ? "set" : "null");
  if (ctx != CTX || !live) return -7;
  if (in_mem && out_mem) {
    if (!ours(in_mem) || !ours(out_mem)) return -5;
    uint16_t *h = in_mem->virt_addr; int8_t *q = out_mem->virt_addr;
    for (int i = 0; i < N; i++) q[i] = quantize(2 * half_to_float(h[i]) + 1);
    return 0;
  }
  return have_input ? 0 : -8;
}

int rknn_outputs_get(rknn_context ctx, uint32_t n, rknn_output *outputs, void *extend) {
  say("rknn_outputs_get ctx=%s n=%u want_float=%u is_prealloc=%u index=%u size=%u", ctx == CTX && live ? "ok" : "bad", n, outputs[0].want_float, outputs[0].is_prealloc, outputs[0].index, outputs[0].size);
  if (ctx != CTX || !live) return -7;
  if (n != 1 || !outputs[0].is_prealloc || outputs[0].want_float || outputs[0].size < N) return -9;
  int8_t *q = outputs[0].buf;
  for (int i = 0; i < N; i++) q[i] = quantize(2 * pending[i] + 1);
  return 0;
}

int rknn_outputs_release(rknn_context ctx, uint32_t n, rknn_output *outputs) {
  say("rknn_outputs_release ctx=%s n=%u", ctx == CTX && live ? "ok" : "bad", n);
  return ctx == CTX && live ? 0 : -7;
}

int rknn_destroy_mem(rknn_context ctx, rknn_tensor_mem *mem) {
  int id = slot(mem);
  say("rknn_destroy_mem ctx=%s mem%d", ctx == CTX && live ? "ok" : "bad", mem_id(mem));
  if (ctx != CTX || !live) return -7;
  if (id < 0) return -5;
  if (mem == in_mem) in_mem = NULL;
  if (mem == out_mem) out_mem = NULL;
  free(mem->virt_addr); free(mem);
  mems[id] = mems[--n_mems];
  return 0;
}

int rknn_destroy(rknn_context ctx) {
  say("rknn_destroy ctx=%s open_mems=%d", ctx == CTX && live ? "ok" : "bad", n_mems);
  if (ctx != CTX || !live) return -7;
  live = 0; have_input = 0; return 0;
}
