import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkTarget, listTargets, loadTarget, TARGETS_DIR } from '../../src/compile/targets.js';

const code = (f: () => unknown) => { try { f(); return 'ok'; } catch (e) { return (e as { code?: string }).code; } };
const raw = async (name: string) => JSON.parse(await readFile(join(TARGETS_DIR, `${name}.json`), 'utf8'));

/** Every number in a profile, with the path to it and the object that holds it (independent of the loader). */
function numbers(v: unknown, path = '', holder?: Record<string, unknown>): { path: string; holder?: Record<string, unknown> }[] {
  if (typeof v === 'number') return [{ path, holder }];
  if (Array.isArray(v)) return v.flatMap((x, i) => numbers(x, `${path}[${i}]`, undefined));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => numbers(x, path ? `${path}.${k}` : k, v as Record<string, unknown>));
  return [];
}

describe('target profiles', () => {
  it('ships rk3588, rk3576, rk3566, raspberry-pi-5 and host, each valid against the loader', async () => {
    const names = await listTargets();
    expect(names).toEqual(expect.arrayContaining(['rk3588', 'rk3576', 'rk3566', 'raspberry-pi-5', 'host']));
    for (const n of names) expect((await loadTarget(n)).name).toBe(n);
    const files = (await readdir(TARGETS_DIR)).filter((f) => f.endsWith('.json'));
    expect(files).toContain('schema.json');
  });

  it('every number carries a source that names an entry of the profile\'s sources table', async () => {
    for (const n of await listTargets()) {
      const t = await raw(n);
      const nums = numbers(t).filter((x) => x.path !== 'version');
      expect(nums.length).toBeGreaterThan(n === "host" ? 8 : 15);
      for (const x of nums) {
        expect(x.path.endsWith('.value'), `${n}: ${x.path} is a bare number`).toBe(true);
        const src = x.holder?.source as string;
        expect(t.sources[src], `${n}: ${x.path} names no source`).toBeDefined();
        expect(t.sources[src].title.length).toBeGreaterThan(5);
      }
      // Quantities whose value is null must say why.
      for (const q of numbers(t).length ? collectQuantities(t) : []) if (q.value === null) expect(t.sources[q.source].kind === 'unmeasured' || typeof q.note === 'string').toBe(true);
    }
  });

  it('rk3588 encodes the NPU facts: 6 TOPS int8, 3 cores, static shapes, no w4a16 for LLMs, 4 GB domains', async () => {
    const t = await loadTarget('rk3588');
    const npu = t.accelerators.find((a) => a.kind === 'npu')!;
    expect(npu.peakGops.int8!.value).toBe(6000);
    expect(npu.cores.value).toBe(3);
    expect(npu.staticShapes).toBe(true);
    expect(npu.llm!.formats).toEqual(['w8a8']);
    expect(npu.formats.some((f) => f.startsWith('w4a16'))).toBe(false);
    expect(npu.memoryDomainBytes!.value).toBe(4 * 2 ** 30);
    expect((await loadTarget('rk3576')).accelerators.find((a) => a.kind === 'npu')!.llm!.formats).toContain('w4a16-g128');
    expect((await loadTarget('raspberry-pi-5')).accelerators.map((a) => a.kind)).toEqual(['cpu']);
  });

  it('host.json is the default and holds only measured or derived numbers; the rest is null and says so', async () => {
    const t = await raw('host');
    expect(t.default).toBe(true);
    for (const q of collectQuantities(t)) {
      const kind = t.sources[q.source].kind;
      if (q.value === null) expect(kind).toBe('unmeasured');
      else expect(['measurement', 'derived', 'assumption']).toContain(kind);
      if (kind === 'assumption') expect(q.source).toBe('assumption');
    }
    expect(t.sources['measured-dev'].title).toMatch(/measured on the dev machine/i);
  });

  it('reports every problem at once: a bare number, an unknown source, a bad format', async () => {
    const t = await raw('rk3588');
    t.memory.peakGBps = 34.1;
    t.accelerators[0].cores.source = 'nowhere';
    t.accelerators[1].formats = ['fp32', 'q3'];
    t.extra = 5;
    let notes: readonly string[] = [];
    try { checkTarget(t, 'broken.json'); } catch (e) { notes = (e as { detail: { notes: string[] } }).detail.notes; expect((e as { code: string }).code).toBe('E_TARGET_INVALID'); }
    expect(notes.length).toBeGreaterThanOrEqual(4);
    expect(notes.join('\n')).toMatch(/memory\.peakGBps.*needs its source/);
    expect(code(() => checkTarget({ ...t, version: 99 }, 'x.json'))).toBe('E_TARGET_VERSION');
    await expect(loadTarget('no-such-board')).rejects.toMatchObject({ code: 'E_TARGET_NOT_FOUND' });
  });
});

function collectQuantities(v: unknown): { value: number | null; source: string; note?: string }[] {
  if (Array.isArray(v)) return v.flatMap(collectQuantities);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if ('value' in o && 'source' in o) return [o as { value: number | null; source: string }];
    return Object.values(o).flatMap(collectQuantities);
  }
  return [];
}
