// Oracle: a plain onnxruntime-node loop (written here, sharing no code with the engine) over the family
// fixture's own ONNX decoder, whose projection and lm_head weights are replaced by their Q4 / Q8 round trip
// (./round-trip.ts: quantized and dequantized by the TypeScript reference in src/formats/native-weights.ts,
// independently of the lift's layout). Both sides then hold the same weights; what remains is the engine's int8 activation
// rounding, so logits must agree within 4 % of the largest logit (either format), and greedy tokens match.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { liftDecoder, writeNative, type HfTextConfig } from '../../src/compile/native/lift.js';
import { buildTextFamily, TEXT_FAMILIES } from '../../src/fixtures/text-families.js';
import { buildGqaTextLm } from '../../src/fixtures/gqa-decoder.js';
import type { NativeBits } from '../../src/formats/native-weights.js';
import { openNative } from '../../src/run/backends/native/native.js';
import type { BrickEntry } from '../../src/formats/bricks.js';
import { readFile } from 'node:fs/promises';
import { roundTripModel } from './round-trip.js';

/** Plain ORT greedy loop with a Concat KV cache: logits of every prompt row, then `steps` greedy tokens. */
async function ortGreedy(file: string, prompt: number[], steps: number, kv: number, d: number, layers: number) {
  const s = await ort.InferenceSession.create(file);
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < layers; l++) for (const k of ['key', 'value']) past[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, kv, 0, d]);
  let ids = prompt, total = 0;
  const tokens: number[] = [], logitsRows: Float32Array[] = [];
  for (let step = 0; step <= steps; step++) {
    const S = ids.length;
    total += S;
    const out = await s.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
      // builder graphs (GroupQueryAttention) take no position_ids
      ...(s.inputNames.includes('position_ids')
        ? { position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(total - S + i)), [1, S]) } : {}),
      ...past,
    });
    for (let l = 0; l < layers; l++) for (const k of ['key', 'value']) past[`past_key_values.${l}.${k}`] = out[`present.${l}.${k}`]!;
    const lg = out.logits!.data as Float32Array, V = out.logits!.dims[2]!;
    for (let r = 0; r < S; r++) logitsRows.push(lg.slice(r * V, (r + 1) * V));
    const last = lg.subarray((S - 1) * V);
    const next = last.indexOf(Math.max(...last));
    tokens.push(next);
    ids = [next];
  }
  await s.release();
  return { tokens, logitsRows };
}

const relErr = (a: Float32Array, b: Float32Array): number => {
  let err = 0, mag = 0;
  for (let i = 0; i < a.length; i++) { err = Math.max(err, Math.abs(a[i]! - b[i]!)); mag = Math.max(mag, Math.abs(b[i]!)); }
  return err / mag;
};

/** A text decoder's feeds for `ids` after a cache of `total - ids.length` rows. */
const feeds = (ids: number[], total: number) => ({
  input_ids: { type: 'int64', data: BigInt64Array.from(ids, BigInt), dims: [1, ids.length] },
  attention_mask: { type: 'int64', data: new BigInt64Array(total).fill(1n), dims: [1, total] },
});

describe('native engine vs ONNX Runtime on the same (round-tripped) weights', () => {
  for (const family of TEXT_FAMILIES)
    for (const bits of [8, 4] as NativeBits[])
      it(`${family} Q${bits}: prompt logits and 6 greedy tokens`, async () => {
        const dir = await mkdtemp(join(tmpdir(), `nm-native-${family}-`));
        const fx = await buildTextFamily(dir, family, { seed: 3 });
        const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as HfTextConfig;
        const lifted = await liftDecoder(join(dir, 'onnx', 'model.onnx'), cfg, bits);
        expect(lifted.config.qkNorm).toBe(family === 'qwen3');
        expect(lifted.config.attnBias).toBe(family === 'qwen2.5');
        await writeNative(dir, 'decoder', lifted);
        const ref = join(dir, 'ref.onnx');
        await roundTripModel(join(dir, 'onnx', 'model.onnx'), ref, bits);
        const { layers, kvHeads, headDim, vocab } = fx.config;
        const prompt = [5, 17, 42, 99, 314, 7, 250, 3];
        const want = await ortGreedy(ref, prompt, 6, kvHeads, headDim, layers);

        const entry = { name: 'decoder', file: 'onnx/model.onnx', inputs: [], outputs: [] } as unknown as BrickEntry;
        const s = await openNative(entry, dir, { threads: 2, maxContext: 64 });
        const all = s.runAll(feeds(prompt, prompt.length)).data as Float32Array;
        let worst = 0;
        for (let r = 0; r < prompt.length; r++) worst = Math.max(worst, relErr(all.subarray(r * vocab, (r + 1) * vocab), want.logitsRows[r]!));
        const tol = 0.04; // int8 activations, the same for both formats (worst seen: qwen3 Q8 3.3 %)
        expect(worst).toBeLessThan(tol);
        const last = all.subarray((prompt.length - 1) * vocab);
        const got = [last.indexOf(Math.max(...last))];
        let total = prompt.length;
        for (let step = 0; step < 6; step++) {
          total += 1;
          const lg = (await s.run(feeds([got.at(-1)!], total))).logits!.data as Float32Array;
          expect(relErr(lg, want.logitsRows[prompt.length + step]!)).toBeLessThan(tol);
          got.push(lg.indexOf(Math.max(...lg)));
        }
        expect(got).toEqual(want.tokens);
        // Prefix reuse: cut back to the prompt minus 2 rows and redo them: same logits as the first time.
        s.ownsKv.truncate(prompt.length - 2);
        const again = s.runAll(feeds(prompt.slice(-2), prompt.length)).data as Float32Array;
        expect(relErr(again.subarray(vocab), last)).toBeLessThan(1e-5);
        await s.close();
      });

  /** Native logits for the prompt (every row) and 6 greedy steps, compared row by row with `want`. */
  async function compareNative(dir: string, prompt: number[], want: Awaited<ReturnType<typeof ortGreedy>>, vocab: number, tol: number, greedy: boolean) {
    const entry = { name: 'decoder', file: 'x.onnx', inputs: [], outputs: [] } as unknown as BrickEntry;
    const s = await openNative(entry, dir, { threads: 2, maxContext: 64 });
    const all = s.runAll(feeds(prompt, prompt.length)).data as Float32Array;
    let worst = 0;
    for (let r = 0; r < prompt.length; r++) worst = Math.max(worst, relErr(all.subarray(r * vocab, (r + 1) * vocab), want.logitsRows[r]!));
    const last = all.subarray((prompt.length - 1) * vocab);
    const got = [last.indexOf(Math.max(...last))];
    // Decode steps feed ORT's own tokens, so the rows stay comparable even where a near-tie flips a token.
    for (let step = 0; step < 6; step++) {
      const lg = (await s.run(feeds([want.tokens[step]!], prompt.length + step + 1))).logits!.data as Float32Array;
      worst = Math.max(worst, relErr(lg, want.logitsRows[prompt.length + step]!));
      got.push(lg.indexOf(Math.max(...lg)));
    }
    await s.close();
    expect(worst).toBeLessThan(tol);
    if (greedy) expect(got).toEqual(want.tokens);
    return worst;
  }

  for (const family of ['qwen3'] as const)
    it(`onnxruntime-genai builder layout (${family}, GroupQueryAttention): fp32 → Q8 and the q4 file's MatMulNBits → Q4`, async () => {
      const dir = await mkdtemp(join(tmpdir(), `nm-native-gqa-${family}-`));
      const lm = await buildGqaTextLm(dir, { family, variants: ['fp32', 'q4'] });
      const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as HfTextConfig;
      const { layers, kvHeads, headDim, vocab } = lm.params.dims;
      const prompt = [5, 17, 42, 99, 31, 7, 250, 3];
      // Q8 from the float file, oracle: ORT on the same file with round-tripped projections.
      await writeNative(dir, 'decoder', await liftDecoder(join(dir, 'onnx', 'model.onnx'), cfg, 8));
      await roundTripModel(join(dir, 'onnx', 'model.onnx'), join(dir, 'ref.onnx'), 8);
      await compareNative(dir, prompt, await ortGreedy(join(dir, 'ref.onnx'), prompt, 6, kvHeads, headDim, layers), vocab, 0.04, true);
      // Q4 from the q4 file (MatMulNBits dequantized, packed again), oracle: ORT on that q4 file as it is.
      // The second rounding (ORT's scales vs the engine's max/-8 rule) adds error: tolerance 8 %, no greedy claim.
      await writeNative(dir, 'decoder', await liftDecoder(join(dir, 'onnx', 'model_q4.onnx'), cfg, 4));
      await compareNative(dir, prompt, await ortGreedy(join(dir, 'onnx', 'model_q4.onnx'), prompt, 6, kvHeads, headDim, layers), vocab, 0.08, false);
    });

  it('refuses a builder graph with sliding-window attention (phi3: local_window_size) with E_NATIVE_LIFT', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nm-native-phi3-'));
    await buildGqaTextLm(dir, { family: 'phi3', variants: ['fp32'] });
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as HfTextConfig;
    await expect(liftDecoder(join(dir, 'onnx', 'model.onnx'), cfg, 8)).rejects.toMatchObject({ code: 'E_NATIVE_LIFT' });
  });

  it('refuses a decoder that is not a Llama/Qwen stack (E_NATIVE_LIFT)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nm-native-bad-'));
    await buildTextFamily(dir, 'qwen2.5');
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as HfTextConfig;
    await expect(liftDecoder(join(dir, 'onnx', 'model.onnx'), { ...cfg, model_type: 'gpt2' }, 4)).rejects.toMatchObject({ code: 'E_NATIVE_LIFT' });
    await expect(liftDecoder(join(dir, 'onnx', 'model.onnx'), { ...cfg, num_key_value_heads: 4 }, 4)).rejects.toMatchObject({ code: 'E_NATIVE_LIFT' });
  });
});
