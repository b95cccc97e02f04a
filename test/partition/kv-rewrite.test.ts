/**
 * `partition --add-kv-cache`: a decoder exported without a cache gets past/present key values.
 * Oracles: (1) a plain onnxruntime-node loop in this test — the rewritten decoder fed its own cache one
 * token at a time against the decoder brick cut without the rewrite recomputing the whole sequence at
 * every step; (2) partition's verification, whose cached step runs the original monolithic graph on the
 * whole sequence; (3) the real CLI's greedy tokens against the same model's split export (onnx/*.onnx,
 * written separately by PyTorch's exporter with a real KV cache).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { noKvCacheNotice } from '../../src/formats/kv-cache.js';
import { loadModel, saveModel } from '../../src/onnx/model-io.js';
import { interfaceOf } from '../../src/partition/brick-files.js';
import { partition } from '../../src/partition/index.js';
import { addKvCache } from '../../src/partition/kv-rewrite.js';
import { CACHED_STEP, verifyBricks } from '../../src/partition/verify.js';
import { codeOf } from '../error-codes.js';
import { cli } from '../cli-helper.js';

const SHAPES = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
const TORCH = join(import.meta.dirname, '..', 'fixtures', 'torch');
let work: string;
let plain: string;
let cached: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-kv-rewrite-'));
  plain = join(work, 'plain');
  cached = join(work, 'cached');
  await partition({ input: join(SHAPES, 'monolithic'), out: plain, verify: false });
  await partition({ input: join(SHAPES, 'monolithic'), out: cached, addKvCache: true });
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

const past = Array.from({ length: 3 }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat();

describe('--add-kv-cache on models/shapes-vlm/monolithic (PyTorch export without a cache)', () => {
  it('gives the decoder the onnx-community cache interface; partition verifies the cached step against the original', async () => {
    const { manifest: m, notes } = await partition({ input: join(SHAPES, 'monolithic'), out: join(work, 'again'), addKvCache: true });
    const dec = m.bricks.find((b) => b.kind === 'decoder')!;
    expect(dec.inputs.map((i) => i.name)).toEqual(['inputs_embeds', 'attention_mask', ...past]);
    expect(dec.outputs.map((o) => o.name)).toEqual(['logits', ...past.map((p) => p.replace('past_key_values', 'present'))]);
    expect(dec.inputs.find((i) => i.name === 'past_key_values.0.key')!.shape).toEqual(['batch_size', 2, 'past_sequence_length', 32]);
    expect(m.verify!.ok).toBe(true);
    expect(m.verify!.outputs.map((o) => o.name)).toEqual(['logits', `logits${CACHED_STEP}`]);
    expect(noKvCacheNotice(m.bricks)).toBeUndefined();
    expect(notes.some((n) => n.startsWith('--add-kv-cache:'))).toBe(true);
    // The other bricks are the same cut as without the rewrite.
    const { manifest: p } = await partition({ input: join(SHAPES, 'monolithic'), out: join(work, 'plain-again'), verify: false });
    expect(m.bricks.filter((b) => b.kind !== 'decoder').map((b) => b.sha256)).toEqual(p.bricks.filter((b) => b.kind !== 'decoder').map((b) => b.sha256));
  });

  it('decoding token by token on its own cache equals recomputing the whole sequence (plain ORT loop)', async () => {
    const so = { logSeverityLevel: 3 as const };
    const full = await ort.InferenceSession.create(join(plain, 'decoder.onnx'), so);
    const kv = await ort.InferenceSession.create(join(cached, 'decoder.onnx'), so);
    try {
      const hidden = 128, prompt = 5, steps = 4, T = prompt + steps;
      const emb = Float32Array.from({ length: T * hidden }, (_, i) => Math.sin(i * 0.37) * 0.5);
      const rows = (a: number, b: number) => new ort.Tensor('float32', emb.slice(a * hidden, b * hidden), [1, b - a, hidden]);
      const ones = (n: number) => new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
      let cache: Record<string, ort.Tensor> = Object.fromEntries(past.map((n) => [n, new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, 32])]));
      let at = 0;
      for (const upto of [prompt, ...Array.from({ length: steps }, (_, i) => prompt + i + 1)]) {
        const got = await kv.run({ inputs_embeds: rows(at, upto), attention_mask: ones(upto), ...cache });
        const ref = await full.run({ inputs_embeds: rows(0, upto), attention_mask: ones(upto) });
        const V = ref.logits.dims[2];
        const want = (ref.logits.data as Float32Array).slice(at * V);
        const have = got.logits.data as Float32Array;
        expect(have.length).toBe(want.length);
        let diff = 0, scale = 0;
        for (let i = 0; i < want.length; i++) { diff = Math.max(diff, Math.abs(have[i] - want[i])); scale = Math.max(scale, Math.abs(want[i])); }
        expect(diff / scale).toBeLessThan(1e-5);
        expect(got['present.0.key'].dims).toEqual([1, 2, upto, 32]);
        cache = Object.fromEntries(past.map((n) => [n, got[n.replace('past_key_values', 'present')]]));
        at = upto;
      }
    } finally { await full.release(); await kv.release(); }
  });

  it('the CLI answers from the cached bricks as the split export does, without the re-prefill notice', async () => {
    const args = ['--image', join(SHAPES, 'calib', 'images', 'spoken-0016.png'), '--prompt', 'describe the image.', '--max-tokens', '12', '--json'];
    const a = await cli('run', cached, ...args);
    const b = await cli('run', SHAPES, ...args);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(a.stdout).tokens).toEqual(JSON.parse(b.stdout).tokens);
    expect(a.stderr).not.toContain('no KV cache');
  });
});

describe('--add-kv-cache elsewhere', () => {
  it('works on the graphs PyTorch\'s exporter wrote for the LLaVA and audio fixtures', async () => {
    for (const f of ['llava_tiny.onnx', 'audio_llm_tiny.onnx']) {
      const { manifest: m } = await partition({ input: join(TORCH, f), out: join(work, f), addKvCache: true, splitProjector: true });
      expect(m.bricks.find((b) => b.kind === 'decoder')!.inputs.some((i) => i.name === 'past_key_values.1.value')).toBe(true);
      expect(m.verify!.outputs.map((o) => o.name)).toContain(`logits${CACHED_STEP}`);
      expect(m.verify!.ok).toBe(true);
    }
  });

  it('verification catches a cache wired to the wrong layer; a graph without attention is refused', async () => {
    const dec = await loadModel(join(plain, 'decoder.onnx'));
    addKvCache(dec.model);
    for (const n of dec.model.graph!.node) n.input = n.input.map((i) => (i === past[0] ? past[2] : i === past[2] ? past[0] : i));
    const dir = join(work, 'tampered');
    await partition({ input: join(SHAPES, 'monolithic'), out: dir, addKvCache: true });
    await saveModel(dec.model, join(dir, 'decoder.onnx'), { sourceDir: dec.dir });
    const { readBricksManifest } = await import('../../src/formats/bricks.js');
    const m = await readBricksManifest(dir, { checkHashes: false });
    const original = join(SHAPES, 'monolithic', 'model.onnx');
    const report = await verifyBricks({ original: { file: original, ...interfaceOf((await loadModel(original)).model) }, dir, bricks: m.bricks, connections: m.connections, vocabSize: 396 });
    expect(report.ok).toBe(false);
    expect(report.outputs.filter((o) => o.maxRelDiff > 1e-4).map((o) => o.name)).toEqual([`logits${CACHED_STEP}`]);

    const embed = await loadModel(join(plain, 'embed.onnx'));
    expect(codeOf(() => addKvCache(embed.model))).toBe('E_KV_REWRITE');
  });
});
