// The native backend under ChatSession: greedy turns, a second turn that reuses the cached prefix, an edit inside
// the prefix, a reset. What is checked is the plumbing (the engine keeps the KV; the session cuts it back):
// the oracle is the same packed weights run by a fresh engine over the whole conversation from scratch, in a
// greedy loop written here. The engine computes each row the same way whether it is prefilled alone or in a
// batch, so the tokens must be equal exactly. (Numerics against ONNX Runtime: test/kernels/oracle.test.ts.)
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { liftDecoder, writeNative, type HfTextConfig } from '../../src/compile/native/lift.js';
import { buildTextFamily } from '../../src/fixtures/text-families.js';
import { readBricksManifest, type BrickEntry } from '../../src/formats/bricks.js';
import { partition } from '../../src/partition/index.js';
import { openBrickSet } from '../../src/run/brick-set.js';
import { openNative } from '../../src/run/backends/native/native.js';
import { ChatSession } from '../../src/run/generation/chat-session.js';

/** Greedy from scratch on a fresh engine: prefill the whole conversation, then one token per step. */
async function freshGreedy(dir: string, brick: BrickEntry, ids: number[], n: number): Promise<number[]> {
  const s = await openNative(brick, dir, { threads: 1, maxContext: 128 });
  const step = async (x: number[], total: number) => {
    const out = await s.run({
      input_ids: { type: 'int64', data: BigInt64Array.from(x, BigInt), dims: [1, x.length] },
      attention_mask: { type: 'int64', data: new BigInt64Array(total).fill(1n), dims: [1, total] },
    });
    const lg = out.logits!.data as Float32Array;
    return lg.indexOf(Math.max(...lg));
  };
  const got = [await step(ids, ids.length)];
  for (let i = 1; i < n; i++) got.push(await step([got.at(-1)!], ids.length + i));
  await s.close();
  return got;
}

describe('native backend under ChatSession', () => {
  it('greedy turns with prefix reuse equal a fresh engine run from scratch', async () => {
    const root = await mkdtemp(join(tmpdir(), 'nm-native-chat-'));
    const src = join(root, 'model');
    await buildTextFamily(src, 'qwen2.5', { seed: 5 });
    const bricks = join(root, 'bricks');
    await partition({ input: src, out: bricks });
    const manifest = await readBricksManifest(bricks);
    const dec = manifest.bricks.find((b) => b.kind === 'decoder')!;
    const cfg = JSON.parse(await readFile(join(src, 'config.json'), 'utf8')) as HfTextConfig;
    await writeNative(bricks, dec.name, await liftDecoder(join(bricks, dec.file), cfg, 8));

    // Lifted weights next to the decoder: the default engine ('auto') picks the native kernels; 'ort' keeps ORT.
    expect((await openBrickSet(bricks, { engine: 'ort' })).placed[dec.name]!.backend).toBe('ort-cpu');
    const set = await openBrickSet(bricks);
    expect(set.placed[dec.name]!.backend).toBe('native');
    const chat = new ChatSession(set);
    const gen = (inputIds: number[], n: number) => chat.generate({ inputIds }, { maxNewTokens: n, stopTokenIds: [] });
    const turn1 = [5, 17, 42, 99, 7, 250, 3, 11];
    const r1 = await gen(turn1, 8);
    expect(chat.kvCache).toBeUndefined(); // the engine keeps the cache
    expect(r1.tokens).toEqual(await freshGreedy(bricks, dec, turn1, 8));
    const turn2 = [...turn1, ...r1.tokens, 60, 61, 62];
    const r2 = await gen(turn2, 8);
    expect(r2.stats.reusedTokens).toBe(turn1.length + r1.tokens.length - 1); // the last answer token was never fed
    expect(r2.tokens).toEqual(await freshGreedy(bricks, dec, turn2, 8));
    // An edit inside the prefix: the cache is cut back to the edit and recomputed from there.
    const turn3 = [5, 17, 42, 80, ...turn2.slice(4)];
    const r3 = await gen(turn3, 6);
    expect(r3.stats.reusedTokens).toBe(3);
    expect(r3.tokens).toEqual(await freshGreedy(bricks, dec, turn3, 6));
    chat.reset();
    const r4 = await gen(turn1, 8);
    expect(r4.stats.reusedTokens).toBe(0);
    expect(r4.tokens).toEqual(r1.tokens);
    await set.close();
  });

  it('a decoder without lifted weights cannot open on native (E_NATIVE_CONFIG)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'nm-native-missing-'));
    await buildTextFamily(join(root, 'model'), 'smollm2');
    await partition({ input: join(root, 'model'), out: join(root, 'bricks') });
    const manifest = await readBricksManifest(join(root, 'bricks'));
    const dec = manifest.bricks.find((b) => b.kind === 'decoder')!;
    const set = await openBrickSet(join(root, 'bricks'), { backends: ['native'] });
    await expect(set.session(dec.name)).rejects.toMatchObject({ code: 'E_NATIVE_CONFIG' });
    await writeFile(join(root, 'bricks', `${dec.name}.native.json`), '{"formatVersion": 99}');
    const set2 = await openBrickSet(join(root, 'bricks'), { backends: ['native'] });
    await expect(set2.session(dec.name)).rejects.toMatchObject({ code: 'E_NATIVE_CONFIG' });
  });
});
