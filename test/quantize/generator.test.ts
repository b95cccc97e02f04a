/** The runtime (KV cache) and the plain no-cache ORT loop give the same greedy tokens on a quantized set. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { readBricksManifest } from '../../src/formats/bricks.js';
import { ortGreedyNoCache, runtimeGreedy } from '../../src/quantize/greedy.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { detFloat, prompt, brickSetDir } from '../run/helpers.js';
import { cleanupFixtures } from '../fixtures/index.js';

let work: string | undefined;
afterAll(async () => { if (work) await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

describe('end-to-end generators', () => {
  it('runtimeGreedy equals ortGreedyNoCache on a hybrid-quantized llava set', async () => {
    work = await mkdtemp(join(tmpdir(), 'nanomind-qgen-'));
    const { out } = await quantizeBricks({ dir: await brickSetDir('llava'), out: join(work, 'q'), newTokens: 0, compareAlgorithms: false, algorithm: 'rtn' });
    const m = await readBricksManifest(out);
    const prompts = [0.2, 1.7].map((phase) => ({
      inputIds: prompt(319, 16).ids.map(BigInt),
      media: { pixel_values: new ort.Tensor('float32', detFloat(3 * 32 * 32, phase), [1, 3, 32, 32]) },
    }));
    const a = await runtimeGreedy(out, m, prompts, 8);
    const b = await ortGreedyNoCache(out, m, prompts, 8);
    expect(a).toEqual(b);
    expect(a[0]).toHaveLength(8);
  });
});
