/** The `quantize` verb in process (the lead registers it in src/cli/main.ts): flags map to options, --json shape, table. */
import { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { quantizeVerb } from '../../src/cli/quantize.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';

let work: string, bricks: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-quantize-cli-'));
  bricks = join(work, 'bricks');
  await partition({ input: (await fixtureDir('llava')).dir, out: bricks });
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

async function run(...args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  quantizeVerb(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => { out += String(s); return true; });
  try { await program.parseAsync(['node', 'nanomind', 'quantize', ...args]); } finally { spy.mockRestore(); }
  return out;
}

describe('nanomind quantize', () => {
  it('--json prints the report with the documented fields', async () => {
    const r = JSON.parse(await run(bricks, '-o', join(work, 'q'), '--brick', 'decoder=w4a16-g128', '--algo', 'rtn', '--tokens', '4', '--json'));
    for (const b of r.bricks) for (const k of ['name', 'kind', 'format', 'file', 'bytesBefore', 'bytesAfter', 'cosine', 'sqnrDb']) expect(b).toHaveProperty(k);
    expect(r.bricks.map((b: { format: string }) => b.format)).toEqual(['fp16', 'w4a16-g32', 'w4a16-g128']);
    expect(r.bricks[2].algorithm).toBe('rtn');
    expect(r.endToEnd).toMatchObject({ newTokens: 4, accuracy: null, floatAccuracy: null });
    expect(typeof r.endToEnd.tokenAgreement).toBe('number');
  });

  it('--algo auto (the default) reports both held-out measurements and the pick, in --json and the table', async () => {
    const r = JSON.parse(await run(bricks, '-o', join(work, 'q5'), '--tokens', '0', '--calib', '2', '--held-out', '1', '--json'));
    const d = r.bricks.find((b: { kind: string }) => b.kind === 'decoder');
    expect(r.settings.algorithm).toBe('auto');
    expect(d.pick.picked).toBe(d.pick.awq > d.pick.rtn ? 'awq' : 'rtn');
    expect(d.algorithm).toBe(d.pick.picked);
    expect(d.algorithms.map((a: { heldOut: { cosine: number } }) => a.heldOut.cosine)).toEqual([d.pick.awq, d.pick.rtn]);
    const text = await run(bricks, '-o', join(work, 'q6'), '--tokens', '0', '--calib', '2', '--held-out', '1');
    expect(text).toMatch(/decoder: awq cosine [\d.]+, SQNR [-\d.]+ dB vs rtn cosine [\d.]+, SQNR [-\d.]+ dB \(held out\): kept (awq|rtn)/);
  });

  it('prints a table; --no-eval skips accuracy', async () => {
    const text = await run(bricks, '-o', join(work, 'q2'), '--recipe', 'cpu-q4', '--no-eval');
    expect(text).toMatch(/decoder\s+decoder\s+w4a16-g32\s+cpu/);
    expect(text).toMatch(/vision\s+vision\s+w8a16-g32\s+cpu/);
    expect(text).not.toMatch(/end to end/);
  });

  it('--sweep GRID scores the given configurations', async () => {
    const r = JSON.parse(await run(bricks, '-o', join(work, 'q4'), '--sweep', 'vision=fp16;embed=fp32;decoder=fp32,w8a16', '--tokens', '2', '--no-compare', '--json'));
    expect(r.sweep.map((x: { formats: Record<string, string> }) => x.formats.decoder)).toEqual(['w8a16-g32', 'fp32']);
  });

  it('turns bad flag values into usage errors', async () => {
    await expect(run(bricks, '-o', join(work, 'q3'), '--calib-method', 'magic')).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(run(bricks, '-o', join(work, 'q3'), '--brick', 'decoder')).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(run(bricks, '-o', join(work, 'q3'), '--sweep', 'llm=fp32')).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(run(bricks, '-o', join(work, 'q3'), '--algo', 'gptq')).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});
