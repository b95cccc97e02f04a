/**
 * Hostile inputs to the runtime: damaged brick sets, feature counts that do not match the prompt,
 * wrongly shaped tensors, impossible requests. Each must fail with its own NanomindError code, and
 * shape problems before ONNX Runtime sees the tensor.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { tensor } from '../../src/run/feeds.js';
import { resolveBackend } from '../../src/run/backends/index.js';
import { ChatSession, generate } from '../../src/run/generation/chat-session.js';
import { cleanupFixtures, IMAGE_TOKEN_ID } from '../fixtures/index.js';
import { brickSetDir, detFloat, f32, freshBrickSet, i64, prompt, releaseSessions } from './helpers.js';

let set: BrickSet;
let image: Float32Array;
beforeAll(async () => {
  set = await openBrickSet(await brickSetDir('llava'), { threads: 1 });
  image = (await set.encode('vision', f32(detFloat(3 * 32 * 32), [1, 3, 32, 32]))).features.slice();
});
afterAll(async () => {
  await set.close();
  await releaseSessions();
  await cleanupFixtures();
});

const code = (c: string) => expect.objectContaining({ code: c });

describe('damaged brick sets', () => {
  it('a missing brick file → E_BRICKS_MISSING_FILE', async () => {
    const dir = await freshBrickSet('llava');
    await rm(join(dir, 'embed_tokens.onnx'));
    await expect(openBrickSet(dir)).rejects.toEqual(code('E_BRICKS_MISSING_FILE'));
  });

  it('one changed byte → E_BRICKS_HASH (unless hashes are not checked)', async () => {
    const dir = await freshBrickSet('llava');
    const file = join(dir, 'vision_encoder.onnx');
    const bytes = await readFile(file);
    bytes[bytes.length - 10] ^= 0x01;
    await writeFile(file, bytes);
    await expect(openBrickSet(dir)).rejects.toEqual(code('E_BRICKS_HASH'));
    const unchecked = await openBrickSet(dir, { checkHashes: false });
    await unchecked.close();
  });

  it('an invalid bricks.json → E_BRICKS_INVALID', async () => {
    const dir = await freshBrickSet('llava');
    const m = JSON.parse(await readFile(join(dir, 'bricks.json'), 'utf8'));
    m.connections.push({ from: 'vision.nope', to: 'decoder.inputs_embeds' });
    await writeFile(join(dir, 'bricks.json'), JSON.stringify(m));
    await expect(openBrickSet(dir)).rejects.toEqual(code('E_BRICKS_INVALID'));
  });
});

describe('bad tensors and requests', () => {
  it('placeholder tokens ≠ feature rows → E_MERGE_COUNT', async () => {
    const { ids } = prompt(IMAGE_TOKEN_ID, 15);
    await expect(generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } })).rejects.toEqual(code('E_MERGE_COUNT'));
    const two = prompt(IMAGE_TOKEN_ID, 32).ids;
    await expect(generate(set, { inputIds: two, features: { [IMAGE_TOKEN_ID]: image } })).rejects.toEqual(code('E_MERGE_COUNT'));
    await expect(generate(set, { inputIds: prompt(IMAGE_TOKEN_ID, 16).ids })).rejects.toEqual(code('E_MERGE_MISSING'));
    await expect(generate(set, { inputIds: [1, 2, 3], features: { 5: image } })).rejects.toEqual(code('E_BAD_INPUT'));
  });

  it('wrong encoder input shape or dtype → E_INPUT_SHAPE / E_INPUT_DTYPE, before ORT runs', async () => {
    const cases = [
      [f32(detFloat(3 * 16 * 16), [1, 3, 16, 16]), 'E_INPUT_SHAPE'],
      [f32(detFloat(3 * 32 * 32), [3, 32, 32]), 'E_INPUT_SHAPE'],
      [tensor('float32', detFloat(100), [1, 3, 32, 32]), 'E_INPUT_SHAPE'], // ort.Tensor would refuse to build this
      [i64(Array(3 * 32 * 32).fill(0), [1, 3, 32, 32]), 'E_INPUT_DTYPE'],
    ] as const;
    for (const [t, c] of cases) {
      const err = await set.encode('vision', t).catch((e: unknown) => e);
      expect(err).toEqual(code(c));
      expect((err as Error).cause).toBeUndefined(); // not a wrapped ORT error
    }
    await expect(set.run('embed', { input_ids: i64([1], [1, 1]), extra: i64([1], [1]) })).rejects.toEqual(code('E_INPUT_UNKNOWN'));
    await expect(set.run('decoder', { input_ids: i64([1], [1, 1]) })).rejects.toEqual(code('E_INPUT_MISSING'));
    await expect(set.encode('audio', f32(detFloat(16 * 64), [1, 16, 64]))).rejects.toEqual(code('E_BRICKS_ROLE'));
  });

  it('bad token ids, masks and options', async () => {
    await expect(generate(set, { inputIds: [] })).rejects.toEqual(code('E_BAD_INPUT'));
    await expect(generate(set, { inputIds: [1, 320] })).rejects.toEqual(code('E_BAD_INPUT'));
    await expect(generate(set, { inputIds: [1, 2.5] })).rejects.toEqual(code('E_BAD_INPUT'));
    await expect(generate(set, { inputIds: [1, 2, 3], attentionMask: [1, 1] })).rejects.toEqual(code('E_BAD_INPUT'));
    await expect(generate(set, { inputIds: [1, 2, 3], attentionMask: [1, 0, 1] })).rejects.toEqual(code('E_BAD_INPUT'));
    await expect(generate(set, { inputIds: [1, 2, 3], attentionMask: [0, 0, 0] })).rejects.toEqual(code('E_BAD_INPUT'));
    await expect(generate(set, { inputIds: [1, 2] }, { maxNewTokens: 0 })).rejects.toEqual(code('E_BAD_OPTION'));
    await expect(generate(set, { inputIds: [1, 2] }, { stopStrings: ['x'] })).rejects.toEqual(code('E_BAD_OPTION'));
    await expect(generate(set, { inputIds: [1, 2] }, { sampling: { temperature: -1 } })).rejects.toEqual(code('E_BAD_OPTION'));
  });

  it('a prompt that leaves no room in the context → E_CONTEXT_OVERFLOW; a full context stops generation', async () => {
    const { ids } = prompt(IMAGE_TOKEN_ID, 16);
    const req = { inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } };
    await expect(generate(set, req, { maxContext: ids.length })).rejects.toEqual(code('E_CONTEXT_OVERFLOW'));
    const r = await generate(set, req, { maxContext: ids.length + 4, stopTokenIds: [] });
    expect(r.stopReason).toBe('context-full');
    expect(r.tokens.length).toBe(5); // 4 fed + the last one sampled
  });

  it('one generate at a time per session → E_SESSION_BUSY', async () => {
    const chat = new ChatSession(set);
    const first = chat.generate({ inputIds: [1, 2, 3] }, { maxNewTokens: 3 });
    await expect(chat.generate({ inputIds: [1, 2, 3] })).rejects.toEqual(code('E_SESSION_BUSY'));
    await first;
  });
});

describe('backend resolution', () => {
  it('reports every skipped backend; none usable → E_BACKEND_UNAVAILABLE', async () => {
    const r = await resolveBackend(['rknn-on-the-moon', 'ort-cpu']);
    expect(r.backend.id).toBe('ort-cpu');
    expect(r.skipped).toEqual([{ id: 'rknn-on-the-moon', reason: expect.stringContaining('unknown backend') }]);
    await expect(resolveBackend(['a', 'b'])).rejects.toEqual(expect.objectContaining({
      code: 'E_BACKEND_UNAVAILABLE', detail: expect.objectContaining({ notes: [expect.stringMatching(/^a: /), expect.stringMatching(/^b: /)] }) }));
    await expect(resolveBackend([])).rejects.toEqual(code('E_BAD_OPTION'));
    const s = await openBrickSet(await brickSetDir('llava'), { backends: ['webgpu-later', 'ort-cpu'] });
    expect(s.skippedBackends.map((x) => x.id)).toEqual(['webgpu-later']);
    await s.close();
  });
});
