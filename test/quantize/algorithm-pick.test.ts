/**
 * `--algo auto` (the default): each 4-bit brick is quantized with AWQ and with round-to-nearest, and
 * keeps whichever output is closer to the float brick's on the HELD-OUT inputs (the tail of a --calib
 * folder here), not the calibration inputs AWQ searched its scales on.
 *
 * Oracle: the two candidates are rebuilt with `--algo awq` and `--algo rtn`, and both are run against the
 * float brick by a plain onnxruntime-node loop written here, on feeds built here from the held-out
 * input_ids, with the cosine over all held-out logits computed in float64. The pick must be the argmax of
 * those two independent measurements, the kept brick must be that candidate byte for byte, and a brick
 * where AWQ is made to lose (α fixed at 1, scales fitted on prompts of one repeated token) must keep RTN.
 */
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBricksManifest, type BrickEntry } from '../../src/formats/bricks.js';
import { buildTextFamily } from '../../src/fixtures/text-families.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks, type QuantizeOptions } from '../../src/quantize/index.js';
import { writeNpyFile } from '../../src/run/inputs/npy.js';
import { mulberry32 } from '../../src/util/prng.js';

const CALIB = 6, HELD = 2, SEQ = 12;
let work: string, bricks: string, vocab: number, decoder: BrickEntry;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-algo-pick-'));
  await buildTextFamily(join(work, 'model'), 'qwen3', { seed: 3 });
  bricks = join(work, 'bricks');
  await partition({ input: join(work, 'model'), out: bricks });
  vocab = JSON.parse(await readFile(join(work, 'model', 'config.json'), 'utf8')).vocab_size;
  decoder = (await readBricksManifest(bricks)).bricks.find((b) => b.kind === 'decoder')!;
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

/** A --calib folder of input_ids.<k>.npy: `calib` prompts, then HELD diverse ones (the held-out tail). */
async function calibFolder(name: string, calib: (k: number, rand: () => number) => number[]): Promise<{ dir: string; held: number[][] }> {
  const dir = join(work, name);
  await mkdir(dir, { recursive: true });
  const rand = mulberry32(11);
  const held: number[][] = [];
  for (let k = 0; k < CALIB + HELD; k++) {
    const ids = k < CALIB ? calib(k, rand) : Array.from({ length: SEQ }, () => Math.floor(rand() * vocab));
    if (k >= CALIB) held.push(ids);
    await writeNpyFile(join(dir, `input_ids.${k}.npy`), { dtype: 'int64', shape: [1, ids.length], data: BigInt64Array.from(ids, BigInt) });
  }
  return { dir, held };
}

/** Feeds of one full pass without a cache, built from the brick's declared inputs (not the quantizer's helpers). */
function feeds(ids: readonly number[]): Record<string, ort.Tensor> {
  const S = ids.length, f: Record<string, ort.Tensor> = {};
  for (const i of decoder.inputs) {
    if (i.name === 'input_ids') f[i.name] = new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]);
    else if (i.name === 'attention_mask') f[i.name] = new ort.Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]);
    else if (i.name === 'position_ids') f[i.name] = new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, k) => BigInt(k)), [1, S]);
    else if (i.name.startsWith('past_key_values.')) f[i.name] = new ort.Tensor('float32', new Float32Array(0), i.shape!.map((d, k) => (k === 0 ? 1 : k === 2 ? 0 : d as number)));
    else throw new Error(`unexpected decoder input ${i.name}`);
  }
  return f;
}

/** Cosine (float64) between the float brick's logits and a candidate's, over every held-out prompt at once. */
async function heldOutCosine(dir: string, held: readonly number[][]): Promise<number> {
  const ref = await ort.InferenceSession.create(join(bricks, decoder.file));
  const got = await ort.InferenceSession.create(join(dir, decoder.file));
  let dot = 0, rr = 0, gg = 0;
  for (const ids of held) {
    const a = (await ref.run(feeds(ids))).logits!.data as Float32Array, b = (await got.run(feeds(ids))).logits!.data as Float32Array;
    for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; rr += a[i]! * a[i]!; gg += b[i]! * b[i]!; }
  }
  await ref.release(); await got.release();
  return dot / Math.sqrt(rr * gg);
}

async function pickAndOracle(name: string, calibDir: string, held: number[][], extra: Partial<QuantizeOptions> = {}) {
  const common = { dir: bricks, recipe: 'cpu-q4', calib: calibDir, heldOut: HELD, newTokens: 0, ...extra };
  const auto = await quantizeBricks({ ...common, out: join(work, `${name}-auto`) });
  // evaluated like the auto run, so that the same tail of the folder is held out of AWQ's calibration
  const awq = await quantizeBricks({ ...common, out: join(work, `${name}-awq`), algorithm: 'awq', compareAlgorithms: false });
  const rtn = await quantizeBricks({ ...common, out: join(work, `${name}-rtn`), algorithm: 'rtn', compareAlgorithms: false });
  const measured = { awq: await heldOutCosine(awq.out, held), rtn: await heldOutCosine(rtn.out, held) };
  const report = auto.report.bricks.find((b) => b.kind === 'decoder')!;
  const sha = (r: typeof auto) => r.manifest.bricks.find((b) => b.kind === 'decoder')!.sha256;
  return { auto, report, measured, sha: { auto: sha(auto), awq: sha(awq), rtn: sha(rtn) } };
}

describe('AWQ or round-to-nearest, picked on held-out inputs', () => {
  it('keeps the candidate whose held-out cosine (measured independently) is higher, byte for byte', async () => {
    const { dir, held } = await calibFolder('calib-diverse', (_, rand) => Array.from({ length: SEQ }, () => Math.floor(rand() * vocab)));
    const r = await pickAndOracle('diverse', dir, held);
    expect(r.auto.report.calibration).toMatchObject({ source: 'dir', samples: CALIB, heldOut: HELD, heldOutSource: 'dir' });
    expect(r.measured.awq).not.toBe(r.measured.rtn);
    const best = r.measured.awq > r.measured.rtn ? 'awq' : 'rtn';
    expect(r.report.pick).toMatchObject({ picked: best, metric: 'heldOut.cosine' });
    expect(r.report.pick!.awq).toBeCloseTo(r.measured.awq, 6);
    expect(r.report.pick!.rtn).toBeCloseTo(r.measured.rtn, 6);
    expect(r.report.algorithm).toBe(best);
    expect(r.sha.auto).toBe(r.sha[best]);
    expect(r.sha.awq).not.toBe(r.sha.rtn);
  }, 60_000);

  it('a brick where AWQ is made worse keeps round-to-nearest', async () => {
    // scales fitted at α = 1 on prompts that repeat one token: wrong for the diverse held-out prompts
    const { dir, held } = await calibFolder('calib-one-token', () => Array.from({ length: SEQ }, () => 7));
    const r = await pickAndOracle('forced', dir, held, { awqAlpha: 1 });
    expect(r.measured.awq).toBeLessThan(r.measured.rtn);
    expect(r.report.pick!.picked).toBe('rtn');
    expect(r.sha.auto).toBe(r.sha.rtn);
    expect(r.report.awq).toBeUndefined(); // the kept brick's record is RTN's, not the discarded AWQ search
  }, 60_000);
});
