/**
 * The RKLLM binding against a contract double of librkllmrt.so (test/backends/doubles/rkllm-double.c,
 * compiled here with the system cc). Contract-tested, not NPU-tested: no Rockchip board is reachable from CI.
 *
 * Oracles: the C compiler's sizeof/offsetof (logged by the double); the double's known generation rule
 * (first token = sum of the prompt's ids, or round(100 · Σ embedding values), plus the kept history; then +1
 * per token), computed independently here; and the call log (parameters as C reads them, a sentinel in
 * rkllm_createDefaultParam's reserved bytes that must come back untouched, keep_history, abort, destroy).
 * GET_LOGITS / GET_LAST_HIDDEN_LAYER: the double's documented mean-of-rows function replayed in float64 here.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadRkllm, RKLLM_STRUCT_SIZES, RkllmModel } from '../../src/run/backends/rkllm.js';
import { code, codeOf } from '../error-codes.js';
import { buildDouble, type Double } from './doubles/build.js';

let d: Double;
let model: string;

beforeAll(async () => {
  d = await buildDouble('rkllm');
  process.env.RKLLM_DOUBLE_LOG = d.log;
  model = join(d.dir, 'decoder.rkllm');
  await writeFile(model, 'RKLLM double model');
});
afterAll(async () => { delete process.env.RKLLM_DOUBLE_LOG; if (d) await rm(d.dir, { recursive: true, force: true }); });

const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('rkllm binding (contract double of librkllmrt.so)', () => {
  it('token and embedding prompts stream tokens; keep_history carries over; the parameters reach C intact', async () => {
    const streamed: number[] = [];
    const m = RkllmModel.open(model, { library: d.lib, maxNewTokens: 5, topK: 1, maxContext: 256, cpuMask: 0xf0, baseDomainId: 2 });
    const a = await m.runTokens([1, 2, 3], { keepHistory: true, onToken: (t) => streamed.push(t.tokenId) });
    expect(a.tokens.map((t) => t.tokenId)).toEqual(ids(6, 5));
    expect(a.tokens.map((t) => t.text)).toEqual(ids(6, 5).map((i) => `<${i}>`));
    expect(streamed).toEqual(ids(6, 5));
    // Two rows of hidden 4, Σ = 0.28 → 28, plus the kept history (6).
    const rows = Float32Array.from({ length: 8 }, (_, i) => i / 100);
    const b = await m.runEmbeds(rows, 4);
    expect(b.tokens.map((t) => t.tokenId)).toEqual(ids(34, 5));
    // Without keep_history the double dropped the history.
    const c = await m.runTokens([10]);
    expect(c.tokens.map((t) => t.tokenId)).toEqual(ids(10, 5));
    await m.close();
    await m.close();
    const log = await d.lines();
    expect(log.find((l) => l.startsWith('sizes '))).toBe(`sizes extend=${RKLLM_STRUCT_SIZES.RKLLMExtendParam} param=${RKLLM_STRUCT_SIZES.RKLLMParam} `
      + `input=${RKLLM_STRUCT_SIZES.RKLLMInput} infer=${RKLLM_STRUCT_SIZES.RKLLMInferParam} result=${RKLLM_STRUCT_SIZES.RKLLMResult} param.extend_param@88 input.union@8`);
    expect(RKLLM_STRUCT_SIZES).toEqual({ RKLLMExtendParam: 120, RKLLMParam: 208, RKLLMInput: 32, RKLLMInferParam: 32, RKLLMResult: 48 });
    expect(log.filter((l) => !l.startsWith('sizes '))).toEqual([
      `rkllm_init model=${model} max_context=256 max_new=5 top_k=1 temperature=0.80 skip_special=1 is_async=0 base_domain=2 cpus=4 mask=0xf0 sentinel=0x5a callback=set`,
      'rkllm_init model dims hidden=4 vocab=0',
      'rkllm_run input_type=1 n_tokens=3 sum=6 mode=0 keep_history=1 history=0',
      'rkllm_run input_type=2 n_tokens=2 sum=28 mode=0 keep_history=0 history=6',
      'rkllm_run input_type=1 n_tokens=1 sum=10 mode=0 keep_history=0 history=0',
      'rkllm_destroy handle=ok',
    ]);
    await expect(code(m.runTokens([1]))).resolves.toBe('E_BRICK_CLOSED');
  });

  it('abort from the streaming callback (marshalled to the JS thread from rkllm_run on a worker) stops generation', async () => {
    const m = RkllmModel.open(model, { library: d.lib, maxNewTokens: 50 });
    const r = await m.runTokens([100], { onToken: (t) => { if (t.tokenId === 102) m.abort(); } });
    expect(r.aborted).toBe(true);
    expect(r.tokens.map((t) => t.tokenId)).toEqual([100, 101, 102]);
    expect((await d.lines()).filter((l) => l.startsWith('rkllm_abort') || l.startsWith('rkllm_run aborted')).slice(-2))
      .toEqual(['rkllm_abort handle=ok', 'rkllm_run aborted after=3']);
    await m.close();
  });

  it('GET_LOGITS / GET_LAST_HIDDEN_LAYER over embedding rows: the last row comes back, kept history continues, clear forgets', async () => {
    // Oracle: the double's documented function (rkllm-double.c, top comment) replayed here in float64 in the
    // same order, so the float32 results must be bit-equal.
    const H = 4, V = 5;
    const file = join(d.dir, 'dims.rkllm');
    await writeFile(file, `RKLLM double model hidden=${H} vocab=${V}`);
    const W = (v: number, j: number) => (((31 * v + 17 * j) % 1009) - 504) / 504;
    const sum = new Float64Array(H);
    let n = 0;
    const feed = (rows: Float32Array) => { for (let t = 0; t < rows.length / H; t++) { for (let j = 0; j < H; j++) sum[j] += rows[t * H + j]!; n++; } };
    const mean = () => Float32Array.from(sum, (x) => x / n);
    const logits = () => Float32Array.from({ length: V }, (_, v) => { let a = 0; for (let j = 0; j < H; j++) a += (sum[j]! / n) * W(v, j); return 1000 * a - Math.floor(1000 * a); });
    const rowsOf = (k: number, seed: number) => Float32Array.from({ length: k * H }, (_, i) => Math.fround(Math.sin(seed + 0.7 * i)));
    const m = RkllmModel.open(file, { library: d.lib });
    const a = rowsOf(3, 1), b = rowsOf(1, 2), c = rowsOf(2, 3);
    feed(a);
    const ra = await m.inferEmbeds(a, H, 'logits', { keepHistory: true });
    expect([ra.numTokens, Array.from(ra.last)]).toEqual([3, Array.from(logits())]);
    feed(b);
    const rb = await m.inferEmbeds(b, H, 'logits', { keepHistory: true });
    expect([rb.numTokens, Array.from(rb.last)]).toEqual([1, Array.from(logits())]);
    feed(c);
    const rc = await m.inferEmbeds(c, H, 'hidden', { keepHistory: false });
    expect(Array.from(rc.last)).toEqual(Array.from(mean()));
    // keep_history 0 dropped everything: the next call sees only its own rows.
    sum.fill(0); n = 0; feed(b);
    expect(Array.from((await m.inferEmbeds(b, H, 'logits', { keepHistory: true })).last)).toEqual(Array.from(logits()));
    m.clearHistory();
    sum.fill(0); n = 0; feed(c);
    expect(Array.from((await m.inferEmbeds(c, H, 'logits')).last)).toEqual(Array.from(logits()));
    await m.close();
    const log = (await d.lines()).filter((l) => /^rkllm_(run|clear)/.test(l)).slice(-6).map((l) => l.replace(/ rowsum=\S+/, ''));
    expect(log).toEqual([
      'rkllm_run input_type=2 n_tokens=3 mode=2 keep_history=1 kv_rows=0',
      'rkllm_run input_type=2 n_tokens=1 mode=2 keep_history=1 kv_rows=3',
      'rkllm_run input_type=2 n_tokens=2 mode=1 keep_history=0 kv_rows=4',
      'rkllm_run input_type=2 n_tokens=1 mode=2 keep_history=1 kv_rows=0',
      'rkllm_clear_kv_cache keep_system_prompt=0',
      'rkllm_run input_type=2 n_tokens=2 mode=2 keep_history=0 kv_rows=0',
    ]);
  });

  it('errors: a missing library is one E_NPU_LIBRARY line naming it; a missing model file; bad embedding rows', async () => {
    expect(codeOf(() => loadRkllm('/nonexistent/librkllmrt.so'))).toBe('E_NPU_LIBRARY');
    try { loadRkllm('/nonexistent/librkllmrt.so'); } catch (e) { expect((e as Error).message).toMatch(/librkllmrt\.so[^\n]*$/); }
    expect(codeOf(() => RkllmModel.open(join(d.dir, 'missing.rkllm'), { library: d.lib }))).toBe('E_BUNDLE_MISSING_FILE');
    const m = RkllmModel.open(model, { library: d.lib });
    expect(codeOf(() => m.runEmbeds(new Float32Array(7), 4))).toBe('E_BRICK_FEEDS');
    await m.close();
  });
});
