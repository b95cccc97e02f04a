/**
 * Text output at 80 columns: tables narrow and wrap their text cells (or split into tables led by the
 * first column), prose lines wrap, no word is lost; and the real commands' output fits. Oracle: line
 * lengths and the words of the input, counted here.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fitLines, table } from '../../src/cli/output.js';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { BIN } from '../cli-helper.js';

const width = (text: string) => Math.max(...text.split('\n').map((l) => [...l].length));
const words = (text: string) => text.split(/[\s-]+/).filter((w) => w && !/^-+$/.test(w)).sort();

const LONG = 'Rockchip RK3588 (Orange Pi 5 Plus, Radxa Rock 5B, Turing RK1 ...): vision → npu (w8a8), audio → npu (w8a8), embed → cpu-little';

describe('tables and prose at a width', () => {
  it('wraps text cells within the width, keeping every word, and leaves a fitting table as it was', () => {
    const rows = [['partition', '1.8 s', LONG], ['quantize', '0.5 s', 'hybrid recipe']];
    const t = table(['stage', 'time', 'what happened'], rows, 80);
    expect(width(t)).toBeLessThanOrEqual(80);
    expect(words(t.split('\n').filter((l) => !/^[- ]+$/.test(l)).join(' '))).toEqual(words(['stage time what happened', ...rows.map((r) => r.join(' '))].join(' ')));
    const wide = table(['stage', 'time', 'what happened'], rows, Infinity);
    expect(wide.split('\n')).toHaveLength(5); // header, rule, two rows, final newline
  });

  it('splits columns that cannot fit into further tables, each led by the first column', () => {
    const header = ['brick', ...Array.from({ length: 12 }, (_, i) => `metric ${i}`)];
    const rows = [['decoder', ...Array.from({ length: 12 }, (_, i) => 1000.5 + i)], ['vision', ...Array.from({ length: 12 }, () => 1.25)]];
    const t = table(header, rows, 80);
    expect(width(t)).toBeLessThanOrEqual(80);
    const parts = t.split('\n\n');
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) expect(p.startsWith('brick')).toBe(true);
    for (let i = 0; i < 12; i++) expect(t).toContain(`metric ${i}`);
  });

  it('folds prose lines with a hanging indent', () => {
    const text = `  note: ${LONG} ${LONG}\nshort`;
    const f = fitLines(text, 60);
    expect(width(f)).toBeLessThanOrEqual(60);
    expect(words(f)).toEqual(words(text));
    expect(f.split('\n').slice(1, -1).every((l) => l.startsWith('    '))).toBe(true);
  });
});

describe('the commands at COLUMNS=80', () => {
  let root: string;
  beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'nanomind-cols-')); });
  afterAll(async () => { await rm(root, { recursive: true, force: true }); });
  const run = (...args: string[]) => promisify(execFile)(process.execPath, [BIN, ...args], { env: { ...process.env, CI: 'true', COLUMNS: '80' } });

  it('demo, partition, quantize and compile (--explain) print nothing wider than 80 columns', async () => {
    const outs = [
      (await run('demo', '-o', join(root, 'demo'))).stdout,
      (await run('partition', join(EMBEDDED_MODEL, 'monolithic', 'model.onnx'), '-o', join(root, 'p'))).stdout,
      (await run('quantize', join(root, 'demo', 'bricks'), '-o', join(root, 'q'), '--no-eval')).stdout,
      (await run('compile', join(root, 'demo', 'bricks-q'), '--target', 'rk3588', '-o', join(root, 'c'), '--explain')).stdout,
    ];
    for (const o of outs) {
      expect(o.length).toBeGreaterThan(200);
      expect(width(o)).toBeLessThanOrEqual(80);
    }
  }, 120_000);
});
