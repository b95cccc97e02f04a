/**
 * RKLLM drives generation: the embedded model (models/shapes-vlm) compiled for rk3588 with the decoder on the
 * NPU, a `.rkllm` file dropped into the bundle, and librkllmrt.so replaced by the contract double
 * (test/backends/doubles/rkllm-double.c, NANOMIND_RKLLM_LIB). Contract-tested, not NPU-tested: no Rockchip
 * board is reachable from here, and the double's "model" is a documented function, not a transformer.
 *
 * Oracle: an independent float64 replica of the double's GET_LOGITS function (logits[v] = frac(1000 Σ_j mean_j · W(v, j)),
 * mean over every embedding row fed so far: any row missing or out of place moves the argmax) computed here from embeddings that plain onnxruntime-node
 * sessions on the bundle's embed_tokens and vision_encoder files give, with the image rows put over the
 * placeholder rows here, and greedy argmax (lowest id on ties) until an eos id or the token limit. The
 * double's call log (rows it kept, rows it got, their sum, clears) checks the call sequence.
 */
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Conversation } from '../../src/chat/session.js';
import { compile } from '../../src/compile/index.js';
import { partition } from '../../src/partition/index.js';
import { rkllmBackend } from '../../src/run/backends/rkllm-backend.js';
import { checkBundle, probeMachine } from '../../src/run/doctor.js';
import { ChatSession } from '../../src/run/generation/chat-session.js';
import { openModel, prepareTurn, type RuntimeModel } from '../../src/run/model.js';
import { runPrompt } from '../../src/run/run.js';
import type { TensorLike } from '../../src/run/backend.js';
import { cli } from '../cli-helper.js';
import { code } from '../error-codes.js';
import { buildDouble, type Double } from './doubles/build.js';

const MODEL = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
const IMAGE = join(MODEL, 'eval', 'images', 'typed-0001.png');
const H = 128, V = 398, IMAGE_TOKEN = 396;
const MAX_NEW = 8;

let root: string, bundle: string, d: Double;
let m: RuntimeModel;
let embedS: ort.InferenceSession, visionS: ort.InferenceSession;
let imageRows: Float32Array;
const env = { lib: process.env.NANOMIND_RKLLM_LIB, log: process.env.RKLLM_DOUBLE_LOG };

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-rkllm-gen-'));
  d = await buildDouble('rkllm');
  process.env.NANOMIND_RKLLM_LIB = d.lib;
  process.env.RKLLM_DOUBLE_LOG = d.log;
  await partition({ input: MODEL, out: join(root, 'bricks') });
  bundle = join(root, 'bundle');
  await compile({ bricks: join(root, 'bricks'), target: 'rk3588', out: bundle, rknn: 'skip', place: [{ brick: 'decoder', accelerator: 'npu' }] });
  // What rkllm-toolkit would write; the double reads its dimensions from it.
  await writeFile(join(bundle, 'decoder.rkllm'), `RKLLM double model hidden=${H} vocab=${V}`);
  m = await openModel(bundle);
  embedS = await ort.InferenceSession.create(join(bundle, 'embed_tokens.onnx'));
  visionS = await ort.InferenceSession.create(join(bundle, 'vision_encoder.onnx'));
  const px = await m.prepareMedia('image', { file: IMAGE });
  const t = px.input as TensorLike;
  imageRows = (await visionS.run({ pixel_values: new ort.Tensor('float32', t.data as Float32Array, t.dims as number[]) })).image_features!.data as Float32Array;
}, 60_000);

afterAll(async () => {
  await m?.close();
  await embedS?.release();
  await visionS?.release();
  for (const [k, v] of [['NANOMIND_RKLLM_LIB', env.lib], ['RKLLM_DOUBLE_LOG', env.log]] as const) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  if (root) await rm(root, { recursive: true, force: true });
  if (d) await rm(d.dir, { recursive: true, force: true });
});

// ---- the oracle ------------------------------------------------------------------------------------------

const W = (v: number, j: number) => (((31 * v + 17 * j) % 1009) - 504) / 504;

async function embedIds(ids: readonly number[]): Promise<Float32Array> {
  const out = await embedS.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]) });
  return out.inputs_embeds!.data as Float32Array;
}

/** The prompt's rows: text embeddings, then the image rows over the placeholders in order. */
async function promptRows(ids: readonly number[], images: Float32Array): Promise<Float32Array> {
  const rows = await embedIds(ids);
  let k = 0;
  ids.forEach((t, i) => { if (t === IMAGE_TOKEN) rows.set(images.subarray(k * H, ++k * H), i * H); });
  expect(k * H).toBe(images.length);
  return rows;
}

/** Greedy tokens of the double's function, in float64 (float32 logits, as the double hands them over). */
async function replica(ids: readonly number[], eos: readonly number[], maxNew = MAX_NEW, images = imageRows): Promise<{ tokens: number[]; rowsum: number }> {
  const sum = new Float64Array(H);
  let n = 0;
  const add = (rows: Float32Array) => { for (let t = 0; t < rows.length / H; t++) { for (let j = 0; j < H; j++) sum[j] += rows[t * H + j]!; n++; } };
  const first = await promptRows(ids, images);
  const rowsum = first.reduce((a, x) => a + x, 0);
  add(first);
  const tokens: number[] = [];
  for (;;) {
    let best = 0, bestV = -Infinity;
    for (let v = 0; v < V; v++) {
      let a = 0;
      for (let j = 0; j < H; j++) a += (sum[j]! / n) * W(v, j);
      const f = Math.fround(1000 * a - Math.floor(1000 * a));
      if (f > bestV) { bestV = f; best = v; }
    }
    tokens.push(best);
    if (eos.includes(best) || tokens.length >= maxNew) return { tokens, rowsum };
    add(await embedIds([best]));
  }
}

interface RunLine { n: number; mode: number; keep: number; kv: number; rowsum: number }
const runLines = (lines: readonly string[]): RunLine[] => lines.flatMap((l) => {
  const x = /^rkllm_run input_type=2 n_tokens=(\d+) mode=(\d+) keep_history=(\d+) kv_rows=(\d+) rowsum=(\S+)$/.exec(l);
  return x ? [{ n: +x[1]!, mode: +x[2]!, keep: +x[3]!, kv: +x[4]!, rowsum: +x[5]! }] : [];
});
/** Log lines written after `mark` lines. */
const since = async (mark: number) => (await d.lines()).slice(mark);
/**
 * A cut-back prefix the public rkllm.h cannot keep: since `mark` RKLLM's cache was cleared and the whole prompt
 * went in again in one rkllm_run, and the stats count nothing as reused.
 */
async function expectClearedAndResent(mark: number, ids: readonly number[], stats: { reusedTokens: number; prefillTokens: number }) {
  expect([stats.reusedTokens, stats.prefillTokens]).toEqual([0, ids.length]);
  const log = await since(mark);
  expect(log[0]).toBe('rkllm_clear_kv_cache keep_system_prompt=0');
  expect(runLines(log)[0]).toMatchObject({ kv: 0, n: ids.length });
}

// ---- the tests -------------------------------------------------------------------------------------------

describe('RKLLM drives the decoder (contract double of librkllmrt.so)', () => {
  it('run: the decoder opens on rkllm; greedy tokens equal the float64 replica; stats name rkllm; the CLI --json too', async () => {
    expect(m.set.placed.decoder!.backend).toBe('rkllm');
    expect(m.notices.filter((n) => n.includes("'decoder'"))).toEqual([]);
    const turn = { prompt: 'What shape is this?', images: [{ file: IMAGE }] };
    const ids = (await prepareTurn(m, turn)).inputIds;
    const mark = (await d.lines()).length;
    const r = await runPrompt(m, turn, { maxNewTokens: MAX_NEW, sampling: { temperature: 0 } });
    const want = await replica(ids, m.set.eosTokenIds);
    expect(r.tokens).toEqual(want.tokens);
    expect(r.stats.backends.decoder).toBe('rkllm');
    // One GET_LOGITS prefill of the whole prompt on an empty cache, then one row per generated token (not the last).
    const runs = runLines(await since(mark));
    expect(runs.map((x) => [x.n, x.mode, x.keep, x.kv])).toEqual([[ids.length, 2, 1, 0], ...want.tokens.slice(0, -1).map((_, i) => [1, 2, 1, ids.length + i])]);
    expect(runs[0]!.rowsum).toBeCloseTo(want.rowsum, 4);
    // RKLLM was opened on the bundle's .rkllm with the context it was converted for (plan.json's workload).
    const plan = JSON.parse(await readFile(join(bundle, 'plan.json'), 'utf8')) as { workload: { maxContext: number } };
    expect((await d.lines()).filter((l) => l.startsWith('rkllm_init model=')).map((l) => l.split(' ').slice(0, 3).join(' ')))
      .toEqual([`rkllm_init model=${join(bundle, 'decoder.rkllm')} max_context=${plan.workload.maxContext}`]);

    const c = await cli('run', bundle, '--image', IMAGE, '--prompt', turn.prompt, '--max-tokens', String(MAX_NEW), '--temperature', '0', '--json');
    expect(c.code, c.stderr).toBe(0);
    const j = JSON.parse(c.stdout);
    expect([j.tokens, j.stats.backends.decoder]).toEqual([want.tokens, 'rkllm']);
  }, 60_000);

  it('chat: two turns through the Conversation; a re-tokenized answer makes RKLLM take the conversation again (the stats say so); tokens equal the replica', async () => {
    const conv = new Conversation(m, { maxNewTokens: MAX_NEW, sampling: { temperature: 0 } });
    await conv.attach('image', IMAGE);
    const mark = (await d.lines()).length;
    const t1 = await conv.send('What shape is this?');
    const ids1 = conv.lastPromptIds;
    expect(t1.tokens).toEqual((await replica(ids1, m.set.eosTokenIds)).tokens);
    expect(t1.stats.backends.decoder).toBe('rkllm');
    expect(runLines(await since(mark))[0]).toMatchObject({ kv: 0, n: ids1.length });
    const mark2 = (await d.lines()).length;
    const t2 = await conv.send('And what colour is it?');
    const ids2 = conv.lastPromptIds;
    expect(t2.tokens).toEqual((await replica(ids2, m.set.eosTokenIds)).tokens);
    // The double's answer is arbitrary bytes, which the template re-tokenizes differently, so the matching
    // prefix ends inside the first answer, before the rows RKLLM holds end: the runtime's cache is cleared
    // and the kept prefix goes in again with the new rows, in one rkllm_run, and the stats say nothing was
    // reused. (The abort test below shows the other case: a continuation that keeps RKLLM's cache.)
    const cached = ids1.length + t1.tokens.length - 1;
    expect(ids2.slice(0, ids1.length)).toEqual(ids1);
    expect(ids2.slice(ids1.length, cached)).not.toEqual(t1.tokens.slice(0, -1));
    await expectClearedAndResent(mark2, ids2, t2.stats);
  }, 60_000);

  it('prefix reuse that cuts the cache: RKLLM clears it and the kept rows go in again with the new ones', async () => {
    const s = new ChatSession(m.set);
    const a = (await prepareTurn(m, { prompt: 'What shape is this?', images: [{ file: IMAGE }] })).inputIds;
    const features = { [IMAGE_TOKEN]: imageRows };
    await s.generate({ inputIds: a, features }, { maxNewTokens: 3 });
    // Same image and start, another question: the cache is cut back to the common prefix.
    const b = (await prepareTurn(m, { prompt: 'Which colour?', images: [{ file: IMAGE }] })).inputIds;
    let k = 0;
    while (a[k] === b[k]) k++;
    expect(k).toBeGreaterThan(0);
    const mark = (await d.lines()).length;
    const r = await s.generate({ inputIds: b, features }, { maxNewTokens: MAX_NEW });
    expect(r.tokens).toEqual((await replica(b, m.set.eosTokenIds)).tokens);
    // The session matched k rows, but RKLLM had to take them again: nothing counts as reused.
    await expectClearedAndResent(mark, b, r.stats);
  }, 60_000);

  it('abort stops generation between steps; the next call continues from what RKLLM kept', async () => {
    const s = new ChatSession(m.set);
    const ids = (await prepareTurn(m, { prompt: 'What shape is this?', images: [{ file: IMAGE }] })).inputIds;
    const want = (await replica(ids, m.set.eosTokenIds)).tokens;
    expect(want.length).toBeGreaterThan(2);
    const ac = new AbortController();
    const req = { inputIds: ids, features: { [IMAGE_TOKEN]: imageRows } };
    const a = await s.generate(req, { maxNewTokens: MAX_NEW, signal: ac.signal, onToken: (e) => { if (e.index === 1) ac.abort(); } });
    expect([a.stopReason, a.tokens]).toEqual(['aborted', want.slice(0, 2)]);
    // Continuing after the aborted answer: RKLLM holds the prompt and the first answer token (the second was
    // sampled, never fed), so only that one row goes in, on top of the kept rows.
    const mark = (await d.lines()).length;
    const more = [...ids, ...a.tokens];
    const b = await s.generate({ ...req, inputIds: more }, { maxNewTokens: MAX_NEW });
    expect(b.tokens).toEqual((await replica(more, m.set.eosTokenIds)).tokens);
    expect(b.stats.reusedTokens).toBe(ids.length + 1);
    const log = await since(mark);
    expect(log.some((l) => l.startsWith('rkllm_clear_kv_cache'))).toBe(false);
    expect(runLines(log)[0]).toMatchObject({ kv: ids.length + 1, n: 1 });
  }, 60_000);

  it('a signal that fires during a long NPU prefill reaches rkllm_abort; the kept rows survive and the next call answers as the replica', async () => {
    const s = new ChatSession(m.set);
    const ids = (await prepareTurn(m, { prompt: 'What shape is this?', images: [{ file: IMAGE }] })).inputIds;
    const a = await s.generate({ inputIds: ids, features: { [IMAGE_TOKEN]: imageRows } }, { maxNewTokens: 3 });
    // A second image and question after the first answer: a long step on top of the kept rows.
    const more = [...ids, ...a.tokens, ...ids];
    const images = new Float32Array(imageRows.length * 2);
    images.set(imageRows);
    images.set(imageRows, imageRows.length);
    const req = { inputIds: more, features: { [IMAGE_TOKEN]: images } };
    const kept = ids.length + a.tokens.length - 1;
    process.env.RKLLM_DOUBLE_ROW_US = '20000';
    const ac = new AbortController();
    let mark = (await d.lines()).length;
    try {
      // Abort once the double has logged the step (so it is in flight), not on a timer.
      const watch = setInterval(() => void d.lines().then((l) => { if (l.slice(mark).some((x) => x.startsWith('rkllm_run'))) ac.abort(); }), 5);
      const r = await s.generate(req, { maxNewTokens: MAX_NEW, signal: ac.signal }).finally(() => clearInterval(watch));
      expect([r.stopReason, r.tokens]).toEqual(['aborted', []]);
    } finally { delete process.env.RKLLM_DOUBLE_ROW_US; }
    const log = await since(mark);
    expect(runLines(log)[0]).toMatchObject({ kv: kept, n: more.length - kept });
    expect(log.filter((l) => /^rkllm_(abort|run aborted|clear)/.test(l)).map((l) => l.replace(/after=\d+/, 'after=k')))
      .toEqual(['rkllm_abort handle=ok', 'rkllm_run aborted after=k', 'rkllm_clear_kv_cache keep_system_prompt=0']);
    expect(s.tokens).toHaveLength(kept);
    // The session still holds the first turn: RKLLM gets those rows again with the new ones, and answers as the replica.
    mark = (await d.lines()).length;
    const b = await s.generate(req, { maxNewTokens: MAX_NEW });
    expect(b.tokens).toEqual((await replica(more, m.set.eosTokenIds, MAX_NEW, images)).tokens);
    expect(b.stats.reusedTokens).toBe(0);
    expect(runLines(await since(mark))[0]).toMatchObject({ kv: 0, n: more.length });
  }, 60_000);

  it('doctor lists the rkllm backend and runs the decoder on it from an empty cache', async () => {
    expect((await probeMachine()).backends.rkllm).toEqual({ ok: true, detail: 'ready' });
    const r = await checkBundle(bundle);
    const dec = r.bricks.find((b) => b.brick === 'decoder')!;
    expect([dec.placed, dec.backend, dec.error]).toEqual(['rkllm', 'rkllm', undefined]);
    expect(Number.isFinite(dec.cosine)).toBe(true);
  }, 60_000);

  it('a missing library is one E_NPU_LIBRARY notice and the decoder runs its ONNX on the CPU; so is a missing .rkllm file', async () => {
    process.env.NANOMIND_RKLLM_LIB = join(root, 'nonexistent', 'librkllmrt.so');
    try {
      await expect(code(rkllmBackend.open(m.set.manifest.bricks.find((b) => b.name === 'decoder')!, bundle, { artifact: 'decoder.rkllm' }))).resolves.toBe('E_NPU_LIBRARY');
      const cpu = await openModel(bundle);
      try {
        expect(cpu.set.placed.decoder!.backend).toBe('ort-cpu');
        const lines = cpu.notices.filter((n) => n.includes("'decoder'"));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toContain('E_NPU_LIBRARY');
        const r = await runPrompt(cpu, { prompt: 'What shape is this?', images: [{ file: IMAGE }] }, { maxNewTokens: 2, sampling: { temperature: 0 } });
        expect(r.stats.backends.decoder).toBe('ort-cpu');
      } finally { await cpu.close(); }
    } finally { process.env.NANOMIND_RKLLM_LIB = d.lib; }
    await rename(join(bundle, 'decoder.rkllm'), join(root, 'moved.rkllm'));
    try {
      const cpu = await openModel(bundle);
      try {
        expect(cpu.set.placed.decoder!.backend).toBe('ort-cpu');
        expect(cpu.notices.filter((n) => n.includes("'decoder'"))).toHaveLength(1);
      } finally { await cpu.close(); }
    } finally { await rename(join(root, 'moved.rkllm'), join(bundle, 'decoder.rkllm')); }
  }, 60_000);
});
