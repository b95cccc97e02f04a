// ONNX Runtime's intra-op threads spin after every call (this test prints the CPU they burn in the 60 ms after a
// ~1 ms vision call: 36–39 ms on the quiet dev machine). Beside the native engine that CPU is taken from the
// decoder's own thread pool, so a brick set whose decoder runs natively opens its ORT bricks with spinning off
// (src/run/brick-set.ts has the measurement); one whose bricks all run on ORT keeps ORT's default. Oracle: the
// process's CPU time while it sleeps after a call, read by process.cpuUsage (the kernel's accounting), not
// anything the runtime reports.
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { liftDecoder, writeNative, type HfTextConfig } from '../../src/compile/native/lift.js';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { partition } from '../../src/partition/index.js';
import { openBrickSet } from '../../src/run/brick-set.js';

/** CPU ms this process spends in the 60 ms after one warm call of `brick` (on 2 intra-op threads). */
async function cpuAfterCall(dir: string, engine: 'auto' | 'ort'): Promise<{ backend: string; idleCpuMs: number }> {
  const set = await openBrickSet(dir, { engine, threads: 2 });
  try {
    const vision = set.encoders.find((e) => e.kind === 'vision')!.chain[0]!;
    const dims = (vision.inputs[0]!.shape ?? []).map((d) => (typeof d === 'number' ? d : 1));
    const feeds = { [vision.inputs[0]!.name]: { type: 'float32' as const, data: new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.1), dims } };
    const s = await set.session(vision.name);
    await s.run(feeds);
    await s.run(feeds);
    const c0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, 60));
    const c1 = process.cpuUsage(c0);
    return { backend: set.placed[set.decoder.brick.name]!.backend, idleCpuMs: (c1.user + c1.system) / 1000 };
  } finally {
    await set.close();
  }
}

describe('ORT bricks beside the native decoder', () => {
  let dir = '';
  beforeAll(async () => {
    dir = join(await mkdtemp(join(tmpdir(), 'nm-spin-')), 'bricks');
    await partition({ input: EMBEDDED_MODEL, out: dir });
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { text_config: HfTextConfig };
    const manifest = JSON.parse(await readFile(join(dir, 'bricks.json'), 'utf8')) as { bricks: { name: string; kind: string; file: string }[] };
    const dec = manifest.bricks.find((b) => b.kind === 'decoder')!;
    await writeNative(dir, dec.name, await liftDecoder(join(dir, dec.file), cfg.text_config, 8));
  }, 60_000);

  it('do not spin after a call; with every brick on ORT they keep ORT\'s spinning', async () => {
    const native = await cpuAfterCall(dir, 'auto');
    expect(native.backend).toBe('native');
    expect(native.idleCpuMs).toBeLessThan(5);
    const ort = await cpuAfterCall(dir, 'ort');
    expect(ort.backend).toBe('ort-cpu');
    expect(ort.idleCpuMs).toBeGreaterThan(10);
    // the figure the README quotes
    console.info(`CPU in the 60 ms after a vision call: ${native.idleCpuMs.toFixed(1)} ms beside the native decoder, ${ort.idleCpuMs.toFixed(1)} ms all on ORT`);
  });
});
