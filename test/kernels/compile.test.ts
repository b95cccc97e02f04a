// `compile --engine native` end to end at the library level: the bundle gains the packed decoder (listed with its
// sha256 in bundle.json), openModel runs the decoder on the native kernels without a "cannot run" notice, and a
// ChatSession generates over it. What is checked is the wiring; the engine's numerics vs ORT are in oracle.test.ts
// and the session plumbing in chat-session.test.ts. A decoder the lift refuses stays on ORT with a note.
import { mkdtemp, readFile, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { buildTextFamily } from '../../src/fixtures/text-families.js';
import { partition } from '../../src/partition/index.js';
import { openModel } from '../../src/run/model.js';
import { openNative } from '../../src/run/backends/native/native.js';
import type { BrickEntry } from '../../src/formats/bricks.js';
import { ChatSession } from '../../src/run/generation/chat-session.js';

async function bundle(family: 'qwen3' | 'smollm2', tweak?: (cfg: Record<string, unknown>) => void) {
  const root = await mkdtemp(join(tmpdir(), `nm-native-compile-${family}-`));
  await buildTextFamily(join(root, 'model'), family);
  if (tweak) {
    const f = join(root, 'model', 'config.json');
    const cfg = JSON.parse(await readFile(f, 'utf8')) as Record<string, unknown>;
    tweak(cfg);
    await (await import('node:fs/promises')).writeFile(f, JSON.stringify(cfg));
  }
  await partition({ input: join(root, 'model'), out: join(root, 'bricks') });
  const out = join(root, 'bundle');
  const r = await compile({ bricks: join(root, 'bricks'), target: 'host', out, rknn: 'skip', engine: 'native', nativeBits: 8 });
  return { out, r };
}

describe('compile --engine native', () => {
  it('packs the decoder into the bundle and the runtime uses it', async () => {
    const { out, r } = await bundle('qwen3');
    const dec = r.manifest.bricks.find((b) => b.kind === 'decoder')!;
    const files = r.manifest.files.map((f) => f.path);
    expect(files).toContain(`${dec.name}.native.json`);
    expect(files).toContain(`${dec.name}.nmq`);
    expect(r.manifest.notes.some((n) => n.includes('packed for the native kernels (Q8'))).toBe(true);
    const m = await openModel(out);
    expect(m.set.placed[dec.name]!.backend).toBe('native');
    expect(m.notices).toEqual([]);
    const res = await new ChatSession(m.set).generate({ inputIds: [5, 6, 7, 8, 9] }, { maxNewTokens: 5, stopTokenIds: [] });
    expect(res.tokens).toHaveLength(5);
    await m.set.close();
    // the engine reads the weights file itself: one cut short is refused with the file named, not read past its end
    const nmq = join(out, `${dec.name}.nmq`);
    await truncate(nmq, (await stat(nmq)).size - 1);
    await expect(openNative({ name: dec.name } as unknown as BrickEntry, out, { threads: 1, maxContext: 16 })).rejects.toMatchObject({ code: 'E_NATIVE_CONFIG' });
  });

  it('a decoder the lift refuses stays on ORT with a note', async () => {
    // hidden_act gelu: not the SwiGLU the engine runs, so the lift must refuse it (the graph itself is unchanged)
    const { out, r } = await bundle('smollm2', (c) => { c.hidden_act = 'gelu'; });
    expect(r.manifest.files.some((f) => f.path.endsWith('.nmq'))).toBe(false);
    expect(r.manifest.notes.some((n) => n.includes('stays on ONNX Runtime'))).toBe(true);
    const m = await openModel(out);
    expect(m.set.placed[r.manifest.bricks.find((b) => b.kind === 'decoder')!.name]!.backend).toBe('ort-cpu');
    await m.set.close();
  });
});
