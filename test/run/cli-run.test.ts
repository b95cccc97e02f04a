/**
 * `nanomind run` end to end through the real CLI: raw ids + .npy tensors against the monolithic
 * reference loop, PNG and WAV inputs through the preprocessors, the image stream, and bad input.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { writeNpyFile } from '../../src/run/inputs/npy.js';
import { cleanupFixtures, fixtureDir, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir, detFloat, f32, freshBrickSet, monolithicGreedy, prompt, releaseSessions } from './helpers.js';
import { cli } from '../cli-helper.js';
import { toneWav } from '../../src/run/inputs/wav.js';

afterAll(async () => { await releaseSessions(); await cleanupFixtures(); });



describe('nanomind run', () => {
  it('greedy output from raw ids and a pixel_values .npy equals the monolithic reference loop token for token', async () => {
    const dir = await brickSetDir('llava');
    const mono = await fixtureDir('llava-monolithic');
    const px = detFloat(3 * 32 * 32, 0.3);
    const npy = join(await fixtureRoot(), 'px.npy');
    await writeNpyFile(npy, { dtype: 'float32', shape: [1, 3, 32, 32], data: px });
    const p = prompt(319, 16);
    const r = await cli('run', dir, '--input-ids', p.ids.join(','), '--input', `pixel_values=${npy}`, '--temperature', '0', '--max-tokens', '10', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    const ref = await monolithicGreedy(mono.file, { pixel_values: f32(px, [1, 3, 32, 32]) }, p.ids, p.mask, 10);
    // The reference runs all 10 steps; the runtime may stop at eos, which then is the last token.
    expect(out.tokens).toEqual(ref.slice(0, out.tokens.length));
    expect(out.tokens.length === 10 || out.stopReason === 'eos').toBe(true);
    for (const k of ['ttftMs', 'prefillTokPerS', 'decodeTokPerS', 'peakRssMb']) expect(out.stats[k]).toBeGreaterThan(0);
    expect(Object.keys(out.stats.bricks).sort()).toEqual(['decoder', 'embed', 'vision']);
  });

  it('takes a PNG and a prompt through the chat template, and a WAV through the Whisper features', async () => {
    const root = await fixtureRoot();
    const png = join(root, 'red.png');
    await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toFile(png);
    const img = await cli('run', await brickSetDir('llava'), '--prompt', 'What colour is it?', '--image', png, '--max-tokens', '6', '--json');
    expect(img.code).toBe(0);
    const a = JSON.parse(img.stdout);
    expect(a.stats.promptTokens).toBeGreaterThan(16);
    expect(a.tokens.length).toBeGreaterThan(0);
    const w = join(root, 'tone.wav');
    await writeFile(w, toneWav(0.5));
    const aud = await cli('run', await brickSetDir('audio'), '--prompt', 'What did you hear?', '--audio', w, '--max-tokens', '6', '--json');
    expect(aud.code).toBe(0);
    expect(JSON.parse(aud.stdout).stats.bricks.audio).toBeGreaterThan(0);
    // Streaming mode prints text, not JSON.
    const s = await cli('run', await brickSetDir('llava'), '--prompt', 'hi', '--image', png, '--max-tokens', '4');
    expect(s.code).toBe(0);
    expect(() => JSON.parse(s.stdout)).toThrow();
  });

  it('--images answers each image, the same with and without encoder/decoder overlap', async () => {
    const root = await fixtureRoot();
    const files: string[] = [];
    for (const [i, c] of [[200, 0, 0], [0, 0, 200], [0, 150, 0]].entries()) {
      const f = join(root, `stream-${i}.png`);
      await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: c[0], g: c[1], b: c[2] } } }).png().toFile(f);
      files.push(f);
    }
    const dir = await brickSetDir('llava');
    const on = JSON.parse((await cli('run', dir, '--prompt', 'colour?', '--images', ...files, '--max-tokens', '5', '--json')).stdout);
    const off = JSON.parse((await cli('run', dir, '--prompt', 'colour?', '--images', ...files, '--max-tokens', '5', '--no-overlap', '--json')).stdout);
    expect(on.overlap).toBe(true);
    expect(off.overlap).toBe(false);
    expect(on.answers.map((x: { tokens: number[] }) => x.tokens)).toEqual(off.answers.map((x: { tokens: number[] }) => x.tokens));
    // different images, different answers (the features really reach the decoder)
    expect(new Set(on.answers.map((x: { tokens: number[] }) => x.tokens.join())).size).toBeGreaterThan(1);
  });

  it('bad input: missing brick file, sha mismatch, wrong tensor shape, unreadable image → one clear error', async () => {
    const broken = await freshBrickSet('llava');
    const dec = join(broken, 'decoder_model_merged.onnx');
    const bytes = await readFile(dec);
    bytes[bytes.length - 10] ^= 0xff;
    await writeFile(dec, bytes);
    const sha = await cli('run', broken, '--prompt', 'x');
    expect([sha.code, sha.stderr.split('\n')[0]]).toEqual([1, expect.stringMatching(/^error\[E_BRICKS_HASH\]/)]);
    const missing = await cli('run', join(broken, 'nope'), '--prompt', 'x');
    expect(missing.stderr).toMatch(/^error\[E_BRICKS_INVALID\]/);
    const dir = await brickSetDir('llava');
    const npy = join(await fixtureRoot(), 'wrong.npy');
    await writeNpyFile(npy, { dtype: 'float32', shape: [1, 3, 16, 16], data: new Float32Array(3 * 16 * 16) });
    const shape = await cli('run', dir, '--prompt', 'x', '--input', `pixel_values=${npy}`, '--json');
    expect([shape.code, JSON.parse(shape.stdout).error.code]).toEqual([1, 'E_INPUT_SHAPE']);
    const notImage = join(await fixtureRoot(), 'not-an-image.png');
    await writeFile(notImage, 'hello');
    const img = await cli('run', dir, '--prompt', 'x', '--image', notImage);
    expect(img.code).toBe(1);
    expect(img.stderr).toMatch(/^error\[E_IMAGE\]/m); // after the fixture's one notice (no image_newline)
    expect(img.stderr).not.toMatch(/\n\s+at /);
    expect((await cli('run', dir, '--input-ids', '1,x')).code).toBe(2);
  });
});
