/**
 * `compile --engine auto` (the default) and the runtime's `--engine auto|native|ort`, on a Qwen2.5-layout text
 * fixture (src/fixtures/text-families.ts: the hub export's names and ops, random weights, 64 wide).
 *
 * - compile: auto packs the CPU decoder, Q8 for a float brick and Q4 for a 4-bit one (the onnx-community q4 export,
 *   MatMulNBits), an explicit nativeBits wins, `engine: 'ort'` packs nothing, and a decoder the lift refuses stays
 *   on ORT with exactly one note.
 * - run: the same bundle under `--engine ort` and `--engine native` names its decoder backend in `--json` stats, and
 *   both produce the greedy tokens of the oracle: a plain onnxruntime-node loop written here over the fixture's own
 *   `onnx/model.onnx` (its KV cache, position ids and argmax; nothing of nanomind's runtime). The native pack is Q8
 *   (weights and activations int8 per block of 32), so its logits are not the float ones: the oracle also
 *   records each step's top-1 − top-2 logit gap, and the test first asserts that every gap is wider than twice
 *   the Q8 error bound (test/kernels/oracle.test.ts: within 4 % of the largest logit; 3.0 % measured on this
 *   fixture's prompt logits) — the condition under which equal tokens are the right expectation.
 * - `--engine native` without the kernels (NANOMIND_NO_KERNELS=1) is E_BACKEND_UNAVAILABLE, on a bundle without a
 *   pack E_NATIVE_MISSING; both exit 1 (src/cli/main.ts: a NanomindError that is not a usage error).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { buildTextFamily } from '../../src/fixtures/text-families.js';
import { writeDtypeVariants } from '../../src/fixtures/variants.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { nativeBitsFor } from '../../src/compile/native/choose.js';
import type { NativeSession } from '../../src/run/backends/native/native.js';
import { openModel } from '../../src/run/model.js';
import { BIN, cli } from '../cli-helper.js';

const exec = promisify(execFile);
// A prompt whose greedy path (3 distinct tokens) keeps the top two logits ≥ 11 % of the largest apart at every
// step in the float model (found by a search over random prompts with the oracle below): far from a tie that
// Q8's error could break.
const PROMPT = [219, 140, 258, 242, 39, 25, 234];
const NEW = 10;
let root: string, fp32: string, q4: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nm-engine-auto-'));
  await buildTextFamily(join(root, 'model'), 'qwen2.5');
  await writeDtypeVariants(join(root, 'model', 'onnx'), ['model'], ['q4']);
  fp32 = join(root, 'bricks');
  q4 = join(root, 'bricks-q4');
  await partition({ input: join(root, 'model'), out: fp32 });
  await partition({ input: join(root, 'model'), out: q4, dtype: 'q4' });
}, 60_000);

const packed = (r: Awaited<ReturnType<typeof compile>>) => r.manifest.files.filter((f) => /\.(nmq|native\.json)$/.test(f.path)).map((f) => f.path).sort();

describe('compile --engine auto', () => {
  it('packs a float decoder at Q8 and a 4-bit one at Q4 by default; explicit bits win; ort packs nothing', async () => {
    const float = await compile({ bricks: fp32, target: 'host', out: join(root, 'b-fp32'), rknn: 'skip' });
    expect(float.native).toMatchObject({ brick: 'decoder', bits: 8, bitsFrom: 'format', format: 'fp32' });
    expect(packed(float)).toEqual(['decoder.native.json', 'decoder.nmq']);
    expect(JSON.parse(await readFile(join(float.out, 'decoder.native.json'), 'utf8')).bits).toBe(8);

    const four = await compile({ bricks: q4, target: 'host', out: join(root, 'b-q4'), rknn: 'skip' });
    expect(four.native).toMatchObject({ bits: 4, bitsFrom: 'format', format: 'w4a16-g32' });
    expect(JSON.parse(await readFile(join(four.out, 'decoder.native.json'), 'utf8')).bits).toBe(4);

    const forced = await compile({ bricks: fp32, target: 'host', out: join(root, 'b-fp32-q4'), rknn: 'skip', nativeBits: 4 });
    expect(forced.native).toMatchObject({ bits: 4, bitsFrom: 'flag' });

    const none = await compile({ bricks: fp32, target: 'host', out: join(root, 'b-ort'), rknn: 'skip', engine: 'ort' });
    expect(none.native).toBeNull();
    expect(packed(none)).toEqual([]);
    const m = await openModel(none.out);
    expect(m.set.placed.decoder!.backend).toBe('ort-cpu');
    await m.close();
  });

  it('a decoder the lift refuses stays on ORT with one note, and nothing is packed', async () => {
    // hidden_act gelu: not the SwiGLU the engine runs (the graph is unchanged, config.json says otherwise)
    await buildTextFamily(join(root, 'model-gelu'), 'qwen2.5');
    const cfgFile = join(root, 'model-gelu', 'config.json');
    await writeFile(cfgFile, JSON.stringify({ ...JSON.parse(await readFile(cfgFile, 'utf8')), hidden_act: 'gelu' }));
    const gelu = join(root, 'bricks-gelu');
    await partition({ input: join(root, 'model-gelu'), out: gelu });
    const r = await compile({ bricks: gelu, target: 'host', out: join(root, 'b-gelu'), rknn: 'skip' });
    expect(r.native).toBeNull();
    expect(packed(r)).toEqual([]);
    expect(r.manifest.notes.filter((n) => n.startsWith('decoder: stays on ONNX Runtime'))).toHaveLength(1);
  });

  it('the CLI default is auto and --json names the pack', async () => {
    const out = join(root, 'b-cli');
    const r = await cli('compile', fp32, '--target', 'host', '-o', out, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).native).toMatchObject({ brick: 'decoder', bits: 8, bitsFrom: 'format' });
    const o = await cli('compile', fp32, '--target', 'host', '-o', join(root, 'b-cli-ort'), '--engine', 'ort', '--json');
    expect(JSON.parse(o.stdout).native).toBeNull();
    const bad = await cli('compile', fp32, '--target', 'host', '-o', join(root, 'never'), '--engine', 'ort', '--native-bits', '4', '--json');
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout).error.code).toBe('E_USAGE');
  });
});

/** Greedy decoding with a plain ORT session over the fixture's model.onnx; returns tokens and each step's top-2 gap. */
async function ortGreedy(file: string, prompt: readonly number[], steps: number, eos: readonly number[]): Promise<{ tokens: number[]; gaps: number[]; spans: number[] }> {
  const s = await ort.InferenceSession.create(file);
  try {
    const past = s.inputNames.filter((n) => n.startsWith('past_key_values.'));
    const cfg = JSON.parse(await readFile(join(file, '..', '..', 'config.json'), 'utf8')) as { num_key_value_heads: number; head_dim: number };
    let kv: Record<string, ort.Tensor> = Object.fromEntries(past.map((n) => [n, new ort.Tensor('float32', new Float32Array(0), [1, cfg.num_key_value_heads, 0, cfg.head_dim])]));
    const i64 = (v: readonly number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
    let ids = [...prompt], pos = 0;
    const tokens: number[] = [], gaps: number[] = [], spans: number[] = [];
    for (let step = 0; step < steps; step++) {
      const feeds: Record<string, ort.Tensor> = { input_ids: i64(ids), attention_mask: i64(Array(pos + ids.length).fill(1)), ...kv };
      if (s.inputNames.includes('position_ids')) feeds.position_ids = i64(ids.map((_, i) => pos + i));
      const out = await s.run(feeds);
      const logits = out.logits!.data as Float32Array, V = out.logits!.dims.at(-1)!;
      const last = logits.subarray(logits.length - V);
      const order = [...last.keys()].sort((a, b) => last[b]! - last[a]!);
      tokens.push(order[0]!);
      gaps.push(last[order[0]!]! - last[order[1]!]!);
      spans.push(Math.max(...last.map(Math.abs)));
      kv = Object.fromEntries(past.map((n) => [n, out[n.replace('past_key_values.', 'present.')]!]));
      pos += ids.length;
      ids = [order[0]!];
      if (eos.includes(order[0]!)) break;
    }
    return { tokens, gaps, spans };
  } finally {
    await s.release();
  }
}

describe('bits under auto', () => {
  it('4-bit formats → Q4, every other format → Q8, and Q8 when AWQ scales had to be folded into 4-bit weights', () => {
    expect(['fp32', 'fp16', 'w8a8', 'w8a16', 'w8a16-g32', 'w4a16-g32', 'w4a16-g128'].map((f) => nativeBitsFor(f))).toEqual([8, 8, 8, 8, 8, 4, 4]);
    expect(nativeBitsFor('w4a16-g32', { awqFolded: 0 })).toBe(4);
    expect(nativeBitsFor('w4a16-g32', { awqFolded: 3 })).toBe(8);
  });

  it("nanomind's own cpu-q4 decoder (AWQ, block-quantized embedding) is packed, at Q8, and matches ORT on the quantized brick", async () => {
    // Oracle: a plain onnxruntime-node run of the quantized brick the bundle carries (MatMulNBits, GatherBlockQuantized
    // and AWQ's inverse-scale Muls as ORT executes them), all prompt rows, against the engine's logits for the same rows.
    const q = await quantizeBricks({ dir: fp32, out: join(root, 'bricks-cpu-q4'), recipe: 'cpu-q4', algorithm: 'awq', compareAlgorithms: false, evaluate: false });
    const r = await compile({ bricks: q.out, target: 'host', out: join(root, 'b-cpu-q4'), rknn: 'skip' });
    expect(r.native).toMatchObject({ bits: 8, bitsFrom: 'format', format: 'w4a16-g32' });
    const dec = r.manifest.bricks.find((b) => b.kind === 'decoder')!;
    const s = await ort.InferenceSession.create(join(r.out, dec.file));
    const ops = (await import('../../src/onnx/model-io.js')).loadModel;
    const graph = (await ops(join(r.out, dec.file))).model.graph!;
    expect(graph.node.some((n) => n.opType === 'GatherBlockQuantized')).toBe(true);
    expect(graph.initializer.some((t) => t.name.endsWith('_awq_inv_scale'))).toBe(true);
    const cfg = JSON.parse(await readFile(join(r.out, 'config.json'), 'utf8')) as { num_key_value_heads: number; head_dim: number };
    const i64 = (v: readonly number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
    const feeds: Record<string, ort.Tensor> = { input_ids: i64(PROMPT), attention_mask: i64(PROMPT.map(() => 1)), position_ids: i64(PROMPT.map((_, i) => i)) };
    for (const n of s.inputNames.filter((x) => x.startsWith('past_key_values.'))) feeds[n] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.num_key_value_heads, 0, cfg.head_dim]);
    const want = (await s.run(feeds)).logits!.data as Float32Array;
    await s.release();
    const m = await openModel(r.out, { engine: 'native' });
    try {
      const session = await m.set.session(dec.name) as NativeSession;
      const got = session.runAll({ input_ids: { type: 'int64', data: BigInt64Array.from(PROMPT.map(BigInt)), dims: [1, PROMPT.length] } }).data as Float32Array;
      expect(got.length).toBe(want.length);
      let dot = 0, a = 0, b = 0;
      for (let i = 0; i < want.length; i++) { dot += got[i]! * want[i]!; a += got[i]! ** 2; b += want[i]! ** 2; }
      // Q8 of the dequantized weights with int8 activations (measured 0.9998 here); a lost AWQ scale or a misread
      // embedding table gives far less (the scales are not near 1, the table feeds every row).
      expect(dot / Math.sqrt(a * b)).toBeGreaterThan(0.999);
    } finally {
      await m.close();
    }
  });
});

describe('run --engine ort | native on the same bundle', () => {
  const run = async (bundle: string, engine: string, env: NodeJS.ProcessEnv = {}) => {
    try {
      const { stdout } = await exec(process.execPath, [BIN, 'run', bundle, '--input-ids', PROMPT.join(','), '--max-tokens', String(NEW), '--temperature', '0',
        '--repetition-penalty', '1', '--engine', engine, '--json'], { env: { ...process.env, CI: 'true', ...env } });
      return { code: 0, json: JSON.parse(stdout) };
    } catch (e) {
      const x = e as { code: number; stdout: string };
      return { code: x.code, json: JSON.parse(x.stdout) };
    }
  };

  it('names the backend in --json stats and both give the plain ORT loop\'s greedy tokens (Q8 pack of a float brick)', async () => {
    const bundle = join(root, 'b-fp32');
    const gen = JSON.parse(await readFile(join(bundle, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
    const oracle = await ortGreedy(join(root, 'model', 'onnx', 'model.onnx'), PROMPT, NEW, gen.eos_token_id);
    // Equal tokens are the right expectation only where Q8's error (≤ 4 % of the largest logit) cannot swap the top two.
    for (const [i, g] of oracle.gaps.entries()) expect(g, `step ${i}`).toBeGreaterThan(2 * 0.04 * oracle.spans[i]!);
    const ortRun = await run(bundle, 'ort');
    const nativeRun = await run(bundle, 'native');
    expect(ortRun.json.stats.backends.decoder).toBe('ort-cpu');
    expect(nativeRun.json.stats.backends.decoder).toBe('native');
    expect(ortRun.json.tokens).toEqual(oracle.tokens);
    expect(nativeRun.json.tokens).toEqual(oracle.tokens);
    // auto (the default) picks the pack
    expect((await run(bundle, 'auto')).json.stats.backends.decoder).toBe('native');
  });

  it('bench --json reports the engine it ran', async () => {
    const bench = async (engine: string) => JSON.parse((await exec(process.execPath, [BIN, 'bench', join(root, 'b-fp32'), '--engine', engine, '--runs', '1',
      '--prompt-tokens', '4', '--new-tokens', '2', '--json'], { env: { ...process.env, CI: 'true' } })).stdout).model.backends.decoder;
    expect(await bench('ort')).toBe('ort-cpu');
    expect(await bench('native')).toBe('native');
  });

  it('--engine native is one error when the kernels do not load or the bundle has no pack; auto falls back', async () => {
    const off = await run(join(root, 'b-fp32'), 'native', { NANOMIND_NO_KERNELS: '1' });
    expect(off.code).toBe(1);
    expect(off.json.error.code).toBe('E_BACKEND_UNAVAILABLE');
    const fallback = await run(join(root, 'b-fp32'), 'auto', { NANOMIND_NO_KERNELS: '1' });
    expect(fallback.code).toBe(0);
    expect(fallback.json.stats.backends.decoder).toBe('ort-cpu');
    const missing = await run(join(root, 'b-ort'), 'native');
    expect(missing.code).toBe(1);
    expect(missing.json.error.code).toBe('E_NATIVE_MISSING');
  });
});
