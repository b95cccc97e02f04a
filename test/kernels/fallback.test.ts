// When the kernels do not load (here: NANOMIND_NO_KERNELS, set before the addon loader is imported), a lifted
// decoder stays on ONNX Runtime and the reason is reported once, as the skipped backend of that brick; generation
// works. Oracle: the same brick set opened with engine 'ort' gives the same tokens.
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

process.env.NANOMIND_NO_KERNELS = '1';
afterAll(() => { delete process.env.NANOMIND_NO_KERNELS; });

describe('native kernels unavailable', () => {
  it('the lifted decoder falls back to ort-cpu with one notice', async () => {
    const { liftDecoder, writeNative } = await import('../../src/compile/native/lift.js');
    const { buildTextFamily } = await import('../../src/fixtures/text-families.js');
    const { readBricksManifest } = await import('../../src/formats/bricks.js');
    const { partition } = await import('../../src/partition/index.js');
    const { openBrickSet } = await import('../../src/run/brick-set.js');
    const { ChatSession } = await import('../../src/run/generation/chat-session.js');
    const root = await mkdtemp(join(tmpdir(), 'nm-native-fallback-'));
    await buildTextFamily(join(root, 'model'), 'llama3.2');
    await partition({ input: join(root, 'model'), out: join(root, 'bricks') });
    const dec = (await readBricksManifest(join(root, 'bricks'))).bricks.find((b) => b.kind === 'decoder')!;
    const cfg = JSON.parse(await readFile(join(root, 'model', 'config.json'), 'utf8'));
    await writeNative(join(root, 'bricks'), dec.name, await liftDecoder(join(root, 'bricks', dec.file), cfg, 4));
    const set = await openBrickSet(join(root, 'bricks'));
    expect(set.placed[dec.name]).toEqual({ backend: 'ort-cpu', skipped: [{ id: 'native', reason: 'NANOMIND_NO_KERNELS is set' }] });
    const ids = [5, 6, 7, 8];
    const got = await new ChatSession(set).generate({ inputIds: ids }, { maxNewTokens: 4, stopTokenIds: [] });
    const want = await new ChatSession(await openBrickSet(join(root, 'bricks'), { engine: 'ort' })).generate({ inputIds: ids }, { maxNewTokens: 4, stopTokenIds: [] });
    expect(got.tokens).toEqual(want.tokens);
    await expect(openBrickSet(join(root, 'bricks'), { engine: 'native' })).rejects.toMatchObject({ code: 'E_BACKEND_UNAVAILABLE' });
  });
});
