/**
 * Encoder ∥ decoder pipelining (`runImageStream` with the vision encoder in a worker thread): the
 * worker's feature rows against the main thread's vision brick, the same answers with and without
 * overlap, the ring drained after a stream, and errors from inside the worker coming back with their
 * code while the worker is ended (no hang, no leaked thread).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import { runImageStream } from '../../src/run/run.js';
import { liveEncoderWorkers, startEncoderWorker } from '../../src/run/workers/encoder-client.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from './helpers.js';

let m: RuntimeModel;
const images: string[] = [];
let notAnImage: string;

beforeAll(async () => {
  m = await openModel(await brickSetDir('llava'));
  const root = await fixtureRoot();
  for (const [i, c] of [[220, 20, 20], [20, 20, 220], [20, 160, 20], [200, 200, 40]].entries()) {
    const f = join(root, `pipe-${i}.png`);
    // A gradient on top of the colour so images differ in more than one pixel value.
    const px = Buffer.alloc(40 * 40 * 3);
    for (let k = 0; k < 40 * 40; k++) for (let ch = 0; ch < 3; ch++) px[3 * k + ch] = (c[ch]! + (k % 40) * (ch + 1)) & 255;
    await sharp(px, { raw: { width: 40, height: 40, channels: 3 } }).png().toFile(f);
    images.push(f);
  }
  notAnImage = join(root, 'pipe-broken.png');
  await writeFile(notAnImage, 'this is text, not a PNG');
});
afterAll(async () => { await m?.close(); await cleanupFixtures(); });

const tokensOf = (r: { answers: readonly { tokens: readonly number[] }[] }) => r.answers.map((a) => [...a.tokens]);

describe('encoder worker', () => {
  it('gives the same feature rows as the vision brick on the main thread, written only into the named slot region', async () => {
    const enc = m.set.encoder('vision');
    const ref = await m.set.encode(enc.placeholderTokenId, await m.mediaInput('image', { file: images[1]! }));
    const w = await startEncoderWorker({ dir: m.dir, threads: 1 });
    try {
      expect(w.threads).toBe(1);
      const own = await w.encode(images[1]!);
      expect(own.rows).toBe(ref.rows);
      expect(own.dims).toEqual(ref.dims);
      expect(own.features).toEqual(ref.features);
      // Into a shared buffer at an offset: the rows land there and the bytes around stay untouched.
      const bytes = ref.features.byteLength;
      const shared = new SharedArrayBuffer(bytes + 64);
      new Uint8Array(shared).fill(0xab);
      w.attach(shared);
      const r = await w.encode(images[1]!, { byteOffset: 32, byteLength: bytes });
      expect(r.features).toBeUndefined();
      expect(new Float32Array(shared, 32, ref.features.length)).toEqual(ref.features);
      expect([...new Uint8Array(shared, 0, 32), ...new Uint8Array(shared, 32 + bytes)].every((b) => b === 0xab)).toBe(true);
      // A region too small for the rows is refused, not overrun.
      await expect(w.encode(images[1]!, { byteOffset: 0, byteLength: bytes - 4 })).rejects.toMatchObject({ code: 'E_TABM_OVERFLOW' });
    } finally {
      await w.terminate();
    }
    expect(liveEncoderWorkers()).toBe(0);
  });

  it('reports a startup failure with its code and leaves no thread behind', async () => {
    await expect(startEncoderWorker({ dir: join(await fixtureRoot(), 'no-such-bricks') })).rejects.toMatchObject({ code: 'E_BRICKS_INVALID' });
    expect(liveEncoderWorkers()).toBe(0);
    await expect(startEncoderWorker({ dir: m.dir, threads: 0 })).rejects.toMatchObject({ code: 'E_BAD_OPTION' });
    expect(liveEncoderWorkers()).toBe(0);
  });
});

describe('runImageStream', () => {
  it('answers the same with the encoder in a worker as one image at a time on this thread, and drains the ring', async () => {
    const opts = { prompt: 'What colour?', maxNewTokens: 6, sampling: { temperature: 0 } } as const;
    const seq = await runImageStream(m, images, opts.prompt, { ...opts, overlap: false });
    const par = await runImageStream(m, images, opts.prompt, { ...opts, overlap: true, encoderThreads: 1 });
    expect(liveEncoderWorkers()).toBe(0);
    expect([seq.overlap, par.overlap]).toEqual([false, true]);
    expect(par.encoderThreads).toBe(1);
    expect(par.encoderStartupMs).toBeGreaterThan(0);
    expect(seq.encoderStartupMs).toBeNull();
    expect(par.answers.map((a) => a.image)).toEqual(images);
    expect(tokensOf(par)).toEqual(tokensOf(seq));
    // Different images, different answers: the worker's rows really reach the decoder.
    expect(new Set(tokensOf(par).map((t) => t.join())).size).toBeGreaterThan(1);
    for (const r of [seq, par])
      expect(r.ring).toMatchObject({ slots: 2, free: 2, writing: 0, ready: 0, reading: 0, pendingWrites: 0, pendingReads: 0,
        committed: images.length, released: images.length });
    // With a slot per image the encoder never waits for the decoder; the answers stay the same.
    const wide = await runImageStream(m, images, opts.prompt, { ...opts, slots: images.length });
    expect(tokensOf(wide)).toEqual(tokensOf(seq));
    expect(wide.ring.free).toBe(images.length);
  });

  it('sizes the ring from plan.json, counts the copies of each hand-off, and refuses rows the plan did not size for', async () => {
    const enc = m.set.encoder('vision');
    const rows = (await m.set.encode(enc.placeholderTokenId, await m.mediaInput('image', { file: images[0]! }))).rows;
    const rowBytes = rows * m.set.hidden! * 4;
    const opts = { maxNewTokens: 4, sampling: { temperature: 0 }, encoderThreads: 1 } as const;
    const base = await runImageStream(m, images, 'What colour?', opts);
    expect(base.ring.sizedFrom).toBe('first image');
    // A bundle's plan.json ring (as compile writes it: from the vision chain's output, rows per image).
    const from = `${enc.chain[enc.chain.length - 1]!.name}.out`;
    const bundle = { plan: { affinity: [], ringBuffers: [{ from, to: 'decoder', slots: 3, slotBytes: rowBytes, tokens: rows, hidden: m.set.hidden!, dtype: 'float32', why: 'test' }] } };
    const planned = { ...m, bundle } as unknown as RuntimeModel;
    const par = await runImageStream(planned, images, 'What colour?', opts);
    expect(par.ring).toMatchObject({ sizedFrom: 'plan.json', slots: 3, slotBytes: rowBytes, free: 3, committed: images.length });
    expect(tokensOf(par)).toEqual(tokensOf(base));
    // Worker: ORT output → shared slot (ORT refuses SharedArrayBuffer tensors), then slot → decoder embeddings.
    for (const a of par.answers) {
      expect(a.handoff).toMatchObject({ copies: 2, bytesCopied: 2 * rowBytes });
      expect(a.handoff.slotCopyMs).toBeGreaterThanOrEqual(0);
    }
    expect(par.handoff).toMatchObject({ copiesPerRequest: 2, bytesCopiedPerRequest: 2 * rowBytes });
    // On this thread the slot is an ordinary ArrayBuffer; the brick set says whether ORT wrote into it.
    const seq = await runImageStream(planned, images, 'What colour?', { ...opts, overlap: false });
    expect(tokensOf(seq)).toEqual(tokensOf(base));
    for (const a of seq.answers.slice(1)) expect([1, 2]).toContain(a.handoff.copies);
    // A plan that promised more rows than the encoder gives: E_MERGE_COUNT; fewer: the slot is too small.
    await expect(runImageStream(m, images, 'x', { ...opts, ringPlan: { slots: 2, tokens: rows + 1 } })).rejects.toMatchObject({ code: 'E_MERGE_COUNT' });
    await expect(runImageStream(m, images, 'x', { ...opts, ringPlan: { slots: 2, tokens: rows - 1 } })).rejects.toMatchObject({ code: 'E_TABM_OVERFLOW' });
    expect(liveEncoderWorkers()).toBe(0);
  }, 60_000);

  it('an unreadable image in the middle of the stream: E_IMAGE from the worker, the worker ended, no hang', async () => {
    const stream = [images[0]!, images[1]!, notAnImage, images[2]!, images[3]!];
    const answered: number[] = [];
    const err = await runImageStream(m, stream, 'What colour?', { maxNewTokens: 4, onAnswer: (i) => answered.push(i) })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_IMAGE', detail: { file: notAnImage } });
    expect(liveEncoderWorkers()).toBe(0);
    // The stream stops at the broken image: nothing after it is answered.
    expect(Math.max(...answered)).toBeLessThan(2);
    // A missing file, and the sequential mode, fail the same way.
    await expect(runImageStream(m, [images[0]!, join(await fixtureRoot(), 'missing.png')], 'x', { maxNewTokens: 2 }))
      .rejects.toMatchObject({ code: 'E_IMAGE' });
    await expect(runImageStream(m, stream, 'x', { maxNewTokens: 2, overlap: false })).rejects.toMatchObject({ code: 'E_IMAGE' });
    expect(liveEncoderWorkers()).toBe(0);
    // The model is still usable afterwards.
    expect((await runImageStream(m, [images[3]!], 'x', { maxNewTokens: 2 })).answers).toHaveLength(1);
  }, 30_000);
});
