/** The runtime honours bundles: a compiled bundle runs on the host and reproduces the brick set. */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { writeNpyFile } from '../../src/run/inputs/npy.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { ANYRES_NEEDS_NEWLINE } from '../../src/run/anyres.js';
import { brickSetDir, detFloat, prompt, releaseSessions } from '../run/helpers.js';
import { cli } from '../cli-helper.js';

afterAll(async () => { await releaseSessions(); await cleanupFixtures(); });


describe('bundles in the runtime', () => {
  it('an rk3588 bundle with the vision brick on the NPU runs here on the CPU, with one notice, and gives the brick set’s tokens', async () => {
    const bricks = await brickSetDir('llava');
    const out = join(await mkdtemp(join(await fixtureRoot(), 'bundle-')), 'bundle');
    // engine 'ort': the bundle must reproduce the brick set's tokens bit for bit, so its decoder stays on ONNX Runtime
    // (compile's default would pack it for the native kernels at Q8, whose random-weight logits may swap a near tie).
    const r = await compile({ bricks, target: 'rk3588', out, place: [{ brick: 'vision', accelerator: 'npu' }], rknn: 'skip', engine: 'ort' });
    expect(r.out).toBe(out);
    const npy = join(await fixtureRoot(), 'bundle-px.npy');
    await writeNpyFile(npy, { dtype: 'float32', shape: [1, 3, 32, 32], data: detFloat(3 * 32 * 32, 1.1) });
    const ids = prompt(319, 16).ids.join(',');
    const args = ['--input-ids', ids, '--input', `pixel_values=${npy}`, '--temperature', '0', '--max-tokens', '8', '--json'];
    const fromBundle = await cli('run', out, ...args);
    const fromBricks = await cli('run', bricks, ...args);
    expect(fromBundle.code).toBe(0);
    expect(JSON.parse(fromBundle.stdout).tokens).toEqual(JSON.parse(fromBricks.stdout).tokens);
    // The llava fixture has no image_newline: both say so once (src/run/anyres.ts); the bundle adds its placement notice.
    const others = (stderr: string) => stderr.trim().split('\n').filter((l) => l.startsWith('notice:') && l !== `notice: ${ANYRES_NEEDS_NEWLINE}`);
    const notices = others(fromBundle.stderr);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toContain("'vision'");
    expect(others(fromBricks.stderr)).toEqual([]);
    for (const r of [fromBundle, fromBricks]) expect(r.stderr.split(ANYRES_NEEDS_NEWLINE)).toHaveLength(2);

    // A damaged bundle is refused before anything runs.
    const file = join(out, 'decoder_model_merged.onnx');
    const bytes = await readFile(file);
    bytes[100] ^= 1;
    await writeFile(file, bytes);
    const bad = await cli('run', out, ...args);
    expect([bad.code, JSON.parse(bad.stdout).error.code]).toEqual([1, 'E_BUNDLE_HASH']);
  });
});
