// The native engine on nanomind's own trained checkpoint (the embedded shapes model: a Qwen2-style decoder, 3
// layers, trained on its task) against ONNX Runtime on the same bundle: greedy answers on the whole held-out set
// (300 questions: 200 typed about an image, 100 spoken) and on the 40 five-turn conversations, where every
// follow-up turn reuses the engine's KV cache. The bundle is compiled for the host by default (`--engine auto`
// packs the decoder); the oracle is the same bundle with `engine: 'ort'`, whose decoder ONNX Runtime runs — no
// code shared with the kernels. The engine rounds activations to int8 per block (and the float decoder's weights
// to Q8), so an answer whose top two tokens nearly tie may flip: measured, 1 of 300 answers and 3 of 200 turns
// (cpu-q4 recipe, AWQ decoder packed at Q8 from its folded weights) and 1 and 2 (float decoder at Q8). All are
// position answers ("bottom" / "bottom right" / "bottom left", the type the model is least sure of) but one
// cpu-q4 describe turn ("… and a purple circle" vs "… a purple square"). With ORT given the very Q8 weights the
// engine holds (./round-trip.ts), only the int8 activations differ: 1 answer (position), 0 turns. The bars hold
// those counts and types: one more flip fails the test.
import { cp, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { evaluate } from '../../src/eval/index.js';
import { evaluateConversations } from '../../src/eval/conversations.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { liftDecoder, writeNative, type HfTextConfig } from '../../src/compile/native/lift.js';
import { sha256File } from '../../src/util/files.js';
import { roundTripModel } from './round-trip.js';

/** One engine's greedy answers on a model: the held-out questions and the conversation turns, with their types. */
async function answers(model: string, engine: 'native' | 'ort') {
  const q = await evaluate({ model, engine });
  const c = await evaluateConversations({ model, engine });
  return { backend: q.backends.decoder, questions: q.answers, turns: c.answers, reused: c.reusedTokens };
}
type Answers = Awaited<ReturnType<typeof answers>>;

/** The answers whose text differs between the two runs (same items in the same order), by question type. */
function flips(a: Answers, b: Answers): { questions: string[]; turns: string[] } {
  const differing = <T extends { got: string; type: string }>(x: readonly T[], y: readonly T[]) => {
    expect(x.length).toBe(y.length);
    return x.filter((v, i) => v.got !== y[i]!.got).map((v) => v.type);
  };
  return { questions: differing(a.questions, b.questions), turns: differing(a.turns, b.turns) };
}

/** Native vs ORT on the same bundle. */
async function bothEngines(bundle: string) {
  const native = await answers(bundle, 'native'), ort = await answers(bundle, 'ort');
  return { native, ort, ...flips(native, ort) };
}

/** How many flips are not position answers (this model's near ties are nearly all there; see the header). */
const notPosition = (types: readonly string[]) => types.filter((t) => t !== 'position').length;

describe('native engine on the embedded trained model: greedy answers equal ONNX Runtime\'s', () => {
  let work = '';
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'nm-native-embedded-'));
    await partition({ input: EMBEDDED_MODEL, out: join(work, 'bricks') });
  }, 60_000);

  it('cpu-q4 bundle: 299 of 300 answers and 197 of 200 conversation turns identical', async () => {
    const q = await quantizeBricks({ dir: join(work, 'bricks'), out: join(work, 'q4'), recipe: 'cpu-q4', evaluate: false });
    const b = await compile({ bricks: q.out, target: 'host', out: join(work, 'b-q4'), rknn: 'skip' });
    expect(b.manifest.files.some((f) => f.path.endsWith('.nmq'))).toBe(true);
    const r = await bothEngines(b.out);
    expect([r.native.backend, r.ort.backend]).toEqual(['native', 'ort-cpu']);
    expect(r.native.questions).toHaveLength(300);
    expect(r.native.turns).toHaveLength(200);
    expect(r.native.reused).toBeGreaterThan(0); // follow-up turns came from the engine's own cache
    expect(r.questions.length).toBeLessThanOrEqual(1);
    expect(r.turns.length).toBeLessThanOrEqual(3);
    expect(notPosition([...r.questions, ...r.turns])).toBeLessThanOrEqual(1); // one describe turn: "… purple circle" vs "… purple square"
  }, 300_000);

  it('float bundle (Q8 pack): 299 of 300 answers and 198 of 200 turns identical', async () => {
    const b = await compile({ bricks: join(work, 'bricks'), target: 'host', out: join(work, 'b-fp32'), rknn: 'skip' });
    const r = await bothEngines(b.out);
    expect([r.native.backend, r.ort.backend]).toEqual(['native', 'ort-cpu']);
    expect(r.questions.length).toBeLessThanOrEqual(1);
    expect(r.turns.length).toBeLessThanOrEqual(2);
    expect(notPosition([...r.questions, ...r.turns])).toBe(0);
  }, 300_000);

  it('same weights (ORT on the Q8 round trip of the float decoder): 299 of 300 answers and all 200 turns identical', async () => {
    const bricks = join(work, 'bricks');
    const manifest = JSON.parse(await readFile(join(bricks, 'bricks.json'), 'utf8')) as { bricks: { name: string; kind: string; file: string; sha256: string; bytes: number }[] };
    const dec = manifest.bricks.find((b) => b.kind === 'decoder')!;
    const cfg = JSON.parse(await readFile(join(bricks, 'config.json'), 'utf8')) as { text_config: HfTextConfig };
    const native = join(work, 'same-native'), ort = join(work, 'same-ort');
    await cp(bricks, native, { recursive: true });
    await writeNative(native, dec.name, await liftDecoder(join(native, dec.file), cfg.text_config, 8));
    await cp(bricks, ort, { recursive: true });
    expect(await roundTripModel(join(bricks, dec.file), join(ort, dec.file), 8)).toBe(22); // 3 layers × 7 projections + lm_head
    Object.assign(dec, { sha256: await sha256File(join(ort, dec.file)), bytes: (await stat(join(ort, dec.file))).size });
    await writeFile(join(ort, 'bricks.json'), JSON.stringify(manifest, null, 2));
    const a = await answers(native, 'native'), b = await answers(ort, 'ort');
    expect([a.backend, b.backend]).toEqual(['native', 'ort-cpu']);
    const f = flips(a, b);
    expect(f.questions.length).toBeLessThanOrEqual(1);
    expect(f.turns).toEqual([]);
    expect(notPosition(f.questions)).toBe(0);
  }, 300_000);
});
