// The native kernels `deploy` ships for the board's runtime (src/deploy/kernels-prebuild.ts): a cross build for an
// arm64 board, this machine's own build for a board like it, nothing (and a reason) otherwise; and the staged
// runtime package lists them. Oracles: the ELF header and symbol names of the file itself (the machine field
// readelf would print), and Node's own loader for the copied build. Loading the arm64 build in an arm64 Node is
// test/deploy/arm64.test.ts's (the emulated board), where the deployed bundle's decoder runs on it.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nodeArch, prebuildKernels, prebuiltAddon } from '../../src/deploy/kernels-prebuild.js';
import { stageRuntimePackage } from '../../src/deploy/runtime.js';

const ROOT = join(import.meta.dirname, '..', '..');
const has = (cmd: string) => { try { execFileSync('sh', ['-c', `command -v ${cmd}`]); return true; } catch { return false; } };
const cross = process.arch === 'x64' && has('aarch64-linux-gnu-gcc');
if (!cross && process.env.CI) throw new Error('the arm64 prebuild test needs aarch64-linux-gnu-gcc (.ci/run installs it)');

/** ELF e_type and e_machine (little-endian header fields at 16 and 18). */
const elf = (b: Buffer) => ({ magic: b.subarray(0, 4).toString('latin1'), type: b.readUInt16LE(16), machine: b.readUInt16LE(18) });

describe('native kernels prebuilt for the board', () => {
  it('names architectures as Node does', () => {
    expect([nodeArch('aarch64'), nodeArch('x86_64'), nodeArch('armv7l')]).toEqual(['arm64', 'x64', undefined]);
  });

  it.skipIf(!cross)('an arm64 board from x86-64: a cross-compiled aarch64 shared object exporting the N-API entry', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'nm-prebuild-'));
    const r = await prebuildKernels(ROOT, 'aarch64', dest);
    expect(r).toMatchObject({ how: 'cross-compiled', file: join(dest, prebuiltAddon('arm64')) });
    const b = await readFile(r.file!);
    expect(elf(b)).toEqual({ magic: '\x7fELF', type: 3 /* ET_DYN */, machine: 183 /* EM_AARCH64 */ });
    expect(b.includes('napi_register_module_v1')).toBe(true);
    expect(b.includes('q4_tile_dp')).toBe(true); // the NEON dot-product kernel is in it
  }, 120_000);

  it('a board like this machine: this build, copied, and it loads', async () => {
    const uname = { x64: 'x86_64', arm64: 'aarch64' }[process.arch as 'x64' | 'arm64'];
    const dest = await mkdtemp(join(tmpdir(), 'nm-prebuild-'));
    const r = await prebuildKernels(ROOT, uname, dest);
    expect(r).toMatchObject({ how: 'copied' });
    const k = createRequire(import.meta.url)(r.file!) as { simd(): string };
    expect(typeof k.simd()).toBe('string');
  });

  it('an architecture without kernels: nothing shipped, one reason', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'nm-prebuild-'));
    const r = await prebuildKernels(ROOT, 'riscv64', dest);
    expect(r.file).toBeUndefined();
    expect('note' in r && r.note).toMatch(/riscv64/);
  });

  it.skipIf(!cross)('the staged runtime package ships prebuilds/ for an arm64 board and lists it in files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nm-stage-'));
    const r = await stageRuntimePackage(ROOT, dir, 'aarch64');
    expect(r.file).toBeDefined();
    const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { files: string[]; scripts?: unknown };
    expect(pkg.files).toEqual(['bin', 'dist', 'targets', 'prebuilds']);
    expect(pkg.scripts).toBeUndefined();
    expect(existsSync(join(dir, prebuiltAddon('arm64')))).toBe(true);
  }, 120_000);
});
