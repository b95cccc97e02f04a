/**
 * Preallocated outputs: a brick writes its output into memory the caller owns (a TABM slot, the
 * generator's embedding arena) and hands back that same memory, not a copy.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { tensor } from '../../src/run/feeds.js';
import { ortCpu } from '../../src/run/backends/ort-cpu.js';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { slotBytesFor, TokenRingBuffer } from '../../src/run/buffers/ring-buffer.js';
import { generate } from '../../src/run/generation/chat-session.js';
import { cleanupFixtures, IMAGE_TOKEN_ID } from '../fixtures/index.js';
import { brickSetDir, detFloat, f32, i64, prompt, releaseSessions } from './helpers.js';

const opened: BrickSet[] = [];
afterAll(async () => {
  for (const s of opened) await s.close();
  await releaseSessions();
  await cleanupFixtures();
});
const open = async () => {
  const set = await openBrickSet(await brickSetDir('llava'), { threads: 1 });
  opened.push(set);
  return set;
};

describe('preallocated outputs', () => {
  it('the backend writes into the given buffer (at an offset) and returns that tensor', async () => {
    const dir = await brickSetDir('llava');
    const set = await open();
    const session = await ortCpu.open(set.manifest.bricks.find((b) => b.kind === 'embed')!, dir, { threads: 1 });
    try {
      const ids = i64([315, 17, 99], [1, 3]);
      const ref = (await session.run({ input_ids: ids })).inputs_embeds!;
      const memory = new Float32Array(10 + 3 * 64).fill(Number.NaN);
      const out = tensor('float32', memory.subarray(10), [1, 3, 64]);
      const r = await session.run({ input_ids: ids }, { outputs: { inputs_embeds: out } });
      expect(r.inputs_embeds).toBe(out);
      expect(r.inputs_embeds!.data.buffer).toBe(memory.buffer);
      expect(Array.from(memory.subarray(10))).toEqual(Array.from(ref.data as Float32Array));
      expect(Number.isNaN(memory[9])).toBe(true); // nothing written before the view
      await expect(session.run({ input_ids: ids }, { outputs: { nope: out } })).rejects.toMatchObject({ code: 'E_BAD_OPTION' });
    } finally {
      await session.close();
    }
  });

  it('the vision encoder writes image features straight into a TABM slot', async () => {
    const set = await open();
    const px = f32(detFloat(3 * 32 * 32, 0.6), [1, 3, 32, 32]);
    const ref = await set.encode('vision', px);
    expect(ref.direct).toBe(false);
    for (const shared of [false, true]) {
      const ring = new TokenRingBuffer({ slots: 2, slotBytes: slotBytesFor({ tokens: 16, hidden: 64, dtype: 'float32' }), shared });
      const w = await ring.acquireWrite();
      const slot = w.view('float32');
      slot.fill(Number.NaN);
      const enc = await set.encode('vision', px, { into: slot });
      // onnxruntime-node cannot bind SharedArrayBuffer memory: a shared ring costs one copy.
      expect(enc.direct).toBe(!shared);
      expect(enc.features.buffer).toBe(ring.buffer);
      expect(enc.features.byteOffset).toBe(w.byteOffset);
      expect(Array.from(slot)).toEqual(Array.from(ref.features));
      w.commit({ tokens: 16, dims: [16, 64], dtype: 'float32' });

      // The consumer reads the slot and the generator copies its rows into the arena once.
      const r = await ring.acquireRead();
      const { ids } = prompt(IMAGE_TOKEN_ID, 16);
      const a = await generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: r.view('float32', 16 * 64) } }, { maxNewTokens: 4, stopTokenIds: [] });
      const b = await generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: ref.features } }, { maxNewTokens: 4, stopTokenIds: [] });
      expect(a.tokens).toEqual(b.tokens);
      r.release();
    }
  });

  it('inputs in SharedArrayBuffer memory (a shared ring) are accepted', async () => {
    const set = await open();
    const pixels = detFloat(3 * 32 * 32, 0.6);
    const shared = new Float32Array(new SharedArrayBuffer(pixels.byteLength));
    shared.set(pixels);
    const a = await set.encode('vision', tensor('float32', shared, [1, 3, 32, 32]));
    const b = await set.encode('vision', f32(pixels, [1, 3, 32, 32]));
    expect(Array.from(a.features)).toEqual(Array.from(b.features));
  });

  it('a slot too small for the features is refused before the encoder runs', async () => {
    const set = await open();
    await expect(set.encode('vision', f32(detFloat(3 * 32 * 32), [1, 3, 32, 32]), { into: new Float32Array(100) }))
      .rejects.toMatchObject({ code: 'E_BUFFER_SIZE' });
  });

  it('the embed brick writes into the generator arena: the decoder is fed views of one buffer', async () => {
    const set = await open();
    const buffers = new Set<ArrayBufferLike>();
    const orig = set.run.bind(set);
    const spy: BrickSet = { ...set, run: async (name, feeds, o) => {
      if (name === 'embed') buffers.add(o!.outputs!.inputs_embeds!.data.buffer);
      if (name === 'decoder') buffers.add(feeds.inputs_embeds!.data.buffer);
      return orig(name, feeds, o);
    } };
    const { ids } = prompt(IMAGE_TOKEN_ID, 16);
    const feats = (await set.encode('vision', f32(detFloat(3 * 32 * 32), [1, 3, 32, 32]))).features;
    await generate(spy, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: feats } }, { maxNewTokens: 5, stopTokenIds: [] });
    expect(buffers.size).toBe(1);
  });
});
