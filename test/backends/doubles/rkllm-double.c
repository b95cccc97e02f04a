/*
 * A contract double of librkllmrt.so (airockchip/rknn-llm rkllm.h at 33f17354): the same symbols and struct
 * layouts, a known computation, and a log of every call and argument for test/backends/rkllm.test.ts.
 * Not Rockchip's code: written from the documented layouts.
 *
 * Generation: the "next token" after a prompt is f(prompt) = (sum of the input ids, or round(100 * sum of the
 * embedding values)) + history, then each following token is the previous + 1, up to max_new_tokens; each
 * is streamed with text "<id>". With keep_history the double remembers the running sum (as a KV cache
 * would) and adds it to the next prompt's. Log lines go to $RKLLM_DOUBLE_LOG.
 *
 * The model file is text; "hidden=H" and "vocab=V" in it give the embedding width (default 4) and the
 * vocabulary (needed for GET_LOGITS), as a real .rkllm carries its dimensions.
 *
 * RKLLM_INFER_GET_LOGITS / GET_LAST_HIDDEN_LAYER with RKLLM_INPUT_EMBED: the double's "KV cache" is the
 * running float64 sum of every embedding row it has been fed and their count. Row t of the result, after
 * adding input row t, is
 *   hidden_states[t][j] = mean[j]                     (mean = sum / count over all rows so far)
 *   logits[t][v]        = frac(1000 * sum_j mean[j] * W(v, j)),    W(v, j) = ((31 v + 17 j) mod 1009 - 504) / 504
 * (frac(x) = x - floor(x): a change in any row fed so far moves the argmax, so a KV slip cannot hide),
 * returned as float32 for every input row (num_tokens = n_tokens), in one NORMAL callback, then FINISH.
 * keep_history = 0 forgets the rows after the call; rkllm_clear_kv_cache forgets them at once. Going past
 * max_context_len rows is an error (-1), as the runtime's fixed KV cache would be. $RKLLM_DOUBLE_ROW_US
 * makes each row take that many microseconds, so a test can rkllm_abort a prefill in flight (checked
 * between rows; an aborted run gives no result, only FINISH).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdarg.h>
#include <unistd.h>

typedef struct { int32_t base_domain_id; int8_t embed_flash; int8_t enabled_cpus_num; uint32_t enabled_cpus_mask; uint8_t reserved[106]; } RKLLMExtendParam;
typedef struct {
  const char *model_path; int32_t max_context_len, max_new_tokens, top_k, n_keep;
  float top_p, temperature, repeat_penalty, frequency_penalty, presence_penalty;
  int32_t mirostat; float mirostat_tau, mirostat_eta; bool skip_special_token, is_async;
  const char *img_start, *img_end, *img_content; RKLLMExtendParam extend_param;
} RKLLMParam;
typedef struct { float *embed; size_t n_tokens; } RKLLMEmbedInput;
typedef struct { int32_t *input_ids; size_t n_tokens; } RKLLMTokenInput;
typedef struct { char *prompt; float *image_embed; size_t n_image_tokens; } RKLLMMultiModelInput;
typedef struct { int input_type; union { const char *prompt_input; RKLLMEmbedInput embed_input; RKLLMTokenInput token_input; RKLLMMultiModelInput multimodal_input; }; } RKLLMInput;
typedef struct { int mode; void *lora_params; void *prompt_cache_params; int keep_history; } RKLLMInferParam;
typedef struct { const float *hidden_states; int embd_size; int num_tokens; } RKLLMResultLastHiddenLayer;
typedef struct { const float *logits; int vocab_size; int num_tokens; } RKLLMResultLogits;
typedef struct { const char *text; int32_t token_id; RKLLMResultLastHiddenLayer last_hidden_layer; RKLLMResultLogits logits; } RKLLMResult;
typedef void (*LLMResultCallback)(RKLLMResult *result, void *userdata, int state);

static FILE *logf_;
static void say(const char *fmt, ...) {
  if (!logf_) { const char *p = getenv("RKLLM_DOUBLE_LOG"); logf_ = p ? fopen(p, "a") : stderr; }
  va_list ap; va_start(ap, fmt); vfprintf(logf_, fmt, ap); va_end(ap); fputc('\n', logf_); fflush(logf_);
}

typedef struct {
  int magic; LLMResultCallback cb; int max_new; long history; volatile int abort; int hidden; int vocab; int max_context;
  double *sum; long rows; /* GET_LOGITS / GET_LAST_HIDDEN_LAYER state: the kept rows' sum and count */
} Handle;
#define MAGIC 0x11a1

RKLLMParam rkllm_createDefaultParam(void) {
  RKLLMParam p; memset(&p, 0, sizeof p);
  p.max_context_len = 512; p.max_new_tokens = 4; p.top_k = 40; p.top_p = 0.9f; p.temperature = 0.8f; p.repeat_penalty = 1.1f;
  p.skip_special_token = false; p.is_async = true; p.extend_param.base_domain_id = 0; p.extend_param.enabled_cpus_num = 4; p.extend_param.enabled_cpus_mask = 0xf0;
  p.extend_param.reserved[105] = 0x5a; /* a sentinel the binding must carry through untouched */
  return p;
}

int rkllm_init(void **handle, RKLLMParam *p, LLMResultCallback cb) {
  say("sizes extend=%zu param=%zu input=%zu infer=%zu result=%zu param.extend_param@%zu input.union@%zu",
      sizeof(RKLLMExtendParam), sizeof(RKLLMParam), sizeof(RKLLMInput), sizeof(RKLLMInferParam), sizeof(RKLLMResult),
      offsetof(RKLLMParam, extend_param), offsetof(RKLLMInput, prompt_input));
  say("rkllm_init model=%s max_context=%d max_new=%d top_k=%d temperature=%.2f skip_special=%d is_async=%d base_domain=%d cpus=%d mask=0x%x sentinel=0x%x callback=%s",
      p->model_path ? p->model_path : "(null)", p->max_context_len, p->max_new_tokens, p->top_k, p->temperature, p->skip_special_token, p->is_async,
      p->extend_param.base_domain_id, p->extend_param.enabled_cpus_num, p->extend_param.enabled_cpus_mask, p->extend_param.reserved[105], cb ? "set" : "null");
  if (!p->model_path || access(p->model_path, R_OK) != 0) return -1;
  Handle *h = calloc(1, sizeof *h); h->magic = MAGIC; h->cb = cb; h->max_new = p->max_new_tokens; h->max_context = p->max_context_len;
  h->hidden = 4;
  FILE *mf = fopen(p->model_path, "r"); char text[256] = {0};
  if (mf) { size_t got = fread(text, 1, sizeof text - 1, mf); text[got] = 0; fclose(mf); }
  const char *hs = strstr(text, "hidden="), *vs = strstr(text, "vocab=");
  if (hs) h->hidden = atoi(hs + 7);
  if (vs) h->vocab = atoi(vs + 6);
  h->sum = calloc((size_t)h->hidden, sizeof *h->sum);
  say("rkllm_init model dims hidden=%d vocab=%d", h->hidden, h->vocab);
  *handle = h; return 0;
}

static double W(int v, int j) { return (double)((31 * v + 17 * j) % 1009 - 504) / 504.0; }

/* GET_LOGITS (mode 2) and GET_LAST_HIDDEN_LAYER (mode 1) over embedding rows: see the top of this file. */
static int run_rows(Handle *h, RKLLMInput *in, RKLLMInferParam *ip, void *userdata) {
  if (in->input_type != 2) { say("rkllm_run mode=%d input_type=%d unsupported", ip->mode, in->input_type); return -1; }
  size_t n = in->embed_input.n_tokens; const float *e = in->embed_input.embed; int H = h->hidden;
  double rowsum = 0; for (size_t i = 0; i < n * (size_t)H; i++) rowsum += e[i];
  say("rkllm_run input_type=2 n_tokens=%zu mode=%d keep_history=%d kv_rows=%ld rowsum=%.6f", n, ip->mode, ip->keep_history, h->rows, rowsum);
  if (n == 0 || h->rows + (long)n > h->max_context) { say("rkllm_run context overflow rows=%ld n=%zu max=%d", h->rows, n, h->max_context); return -1; }
  if (ip->mode == 2 && h->vocab <= 0) { say("rkllm_run logits without vocab"); return -1; }
  int width = ip->mode == 2 ? h->vocab : H;
  float *out = malloc(n * (size_t)width * sizeof *out);
  const char *slow = getenv("RKLLM_DOUBLE_ROW_US");
  for (size_t t = 0; t < n; t++) {
    if (slow) usleep((useconds_t)atoi(slow));
    if (h->abort) { say("rkllm_run aborted after=%zu", t); free(out); h->abort = 0; h->cb(NULL, userdata, 2); return 0; }
    for (int j = 0; j < H; j++) h->sum[j] += e[t * H + j];
    h->rows++;
    for (int c = 0; c < width; c++) {
      double acc = 0;
      if (ip->mode == 2) { for (int j = 0; j < H; j++) acc += (h->sum[j] / h->rows) * W(c, j); acc = 1000 * acc - floor(1000 * acc); }
      else acc = h->sum[c] / h->rows;
      out[t * width + c] = (float)acc;
    }
  }
  RKLLMResult r; memset(&r, 0, sizeof r);
  if (ip->mode == 2) { r.logits.logits = out; r.logits.vocab_size = width; r.logits.num_tokens = (int)n; }
  else { r.last_hidden_layer.hidden_states = out; r.last_hidden_layer.embd_size = width; r.last_hidden_layer.num_tokens = (int)n; }
  h->cb(&r, userdata, 0);
  memset(out, 0xff, n * (size_t)width * sizeof *out); /* NaNs: a binding that kept the pointer reads garbage */
  free(out);
  h->cb(NULL, userdata, 2);
  if (!ip->keep_history) { memset(h->sum, 0, (size_t)H * sizeof *h->sum); h->rows = 0; }
  return 0;
}

int rkllm_run(void *handle, RKLLMInput *in, RKLLMInferParam *ip, void *userdata) {
  Handle *h = handle;
  if (!h || h->magic != MAGIC) { say("rkllm_run handle=bad"); return -1; }
  if (ip->mode == 1 || ip->mode == 2) return run_rows(h, in, ip, userdata);
  if (ip->mode != 0) { say("rkllm_run mode=%d unknown", ip->mode); return -1; }
  long sum = 0; size_t n = 0;
  if (in->input_type == 1) { n = in->token_input.n_tokens; for (size_t i = 0; i < n; i++) sum += in->token_input.input_ids[i]; }
  else if (in->input_type == 2) { n = in->embed_input.n_tokens; double s = 0; for (size_t i = 0; i < n * (size_t)h->hidden; i++) s += in->embed_input.embed[i]; sum = lround(100 * s); }
  else { say("rkllm_run input_type=%d unsupported", in->input_type); return -1; }
  say("rkllm_run input_type=%d n_tokens=%zu sum=%ld mode=%d keep_history=%d history=%ld", in->input_type, n, sum, ip->mode, ip->keep_history, h->history);
  long tok = sum + h->history; char text[32];
  for (int i = 0; i < h->max_new; i++) {
    if (h->abort) { say("rkllm_run aborted after=%d", i); break; }
    RKLLMResult r; memset(&r, 0, sizeof r);
    snprintf(text, sizeof text, "<%ld>", tok + i); r.text = text; r.token_id = (int32_t)(tok + i);
    h->cb(&r, userdata, 0);
  }
  h->cb(NULL, userdata, 2);
  h->history = ip->keep_history ? h->history + sum : 0;
  h->abort = 0;
  return 0;
}

int rkllm_abort(void *handle) { Handle *h = handle; say("rkllm_abort handle=%s", h && h->magic == MAGIC ? "ok" : "bad"); if (!h || h->magic != MAGIC) return -1; h->abort = 1; return 0; }
int rkllm_clear_kv_cache(void *handle, int keep) {
  Handle *h = handle; say("rkllm_clear_kv_cache keep_system_prompt=%d", keep); if (!h || h->magic != MAGIC) return -1;
  h->history = 0; memset(h->sum, 0, (size_t)h->hidden * sizeof *h->sum); h->rows = 0; return 0;
}
int rkllm_destroy(void *handle) { Handle *h = handle; say("rkllm_destroy handle=%s", h && h->magic == MAGIC ? "ok" : "bad"); if (!h || h->magic != MAGIC) return -1; h->magic = 0; free(h->sum); free(h); return 0; }
