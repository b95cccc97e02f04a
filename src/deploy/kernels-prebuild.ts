/**
 * The native kernels for a board's runtime, built here and shipped prebuilt (a board has no compiler to count on,
 * and `deploy` installs the runtime with its scripts stripped): `prebuilds/linux-<arch>/nanomind_kernels.node`,
 * the layout node-gyp-build and prebuildify use, which src/run/backends/native/addon.ts loads when the package
 * has no build of its own.
 *   - a board of this machine's architecture gets this machine's build (kernels/build/Release; it picks its SIMD
 *     path by CPUID at run time, so it suits any x86-64 or arm64 board alike);
 *   - an arm64 board deployed from x86-64 gets a cross build: gcc-aarch64-linux-gnu over kernels/src, against the
 *     N-API headers of this Node (N-API is ABI-stable, so any Node ≥ 20 on the board loads it).
 * Anything else (no cross compiler, another architecture) ships no kernels: the board's runtime then runs the
 * decoder on ONNX Runtime with one notice, and deploy says why in a note.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { execa } from 'execa';

export const PREBUILDS_DIR = 'prebuilds';
export const ADDON_FILE = 'nanomind_kernels.node';

/** Node's name for a `uname -m` architecture. */
export function nodeArch(uname: string): string | undefined {
  return ({ aarch64: 'arm64', arm64: 'arm64', x86_64: 'x64', amd64: 'x64' } as Record<string, string>)[uname];
}

/** Where a package keeps the prebuilt addon for `linux-<arch>`, relative to its root. */
export const prebuiltAddon = (arch: string): string => join(PREBUILDS_DIR, `linux-${arch}`, ADDON_FILE);

const CROSS: Record<string, string> = { arm64: 'aarch64-linux-gnu-gcc' };

/** The sources, flags and libraries of kernels/binding.gyp (plain JSON), for a build without node-gyp. */
async function gypTarget(root: string): Promise<{ sources: string[]; cflags: string[]; libraries: string[] }> {
  const gyp = JSON.parse(await readFile(join(root, 'kernels', 'binding.gyp'), 'utf8')) as { targets: { sources: string[]; cflags: string[]; libraries: string[] }[] };
  const t = gyp.targets[0]!;
  return { sources: t.sources.map((f) => join(root, 'kernels', f)), cflags: t.cflags, libraries: t.libraries };
}

export type Prebuild = { readonly file: string; readonly how: 'copied' | 'cross-compiled' } | { readonly file?: undefined; readonly note: string };

/** Puts the addon for a board of architecture `uname` (as `uname -m` says it) into `dest`'s prebuilds folder. */
export async function prebuildKernels(root: string, uname: string, dest: string, signal?: AbortSignal): Promise<Prebuild> {
  const arch = nodeArch(uname);
  if (!arch) return { note: `no native kernels for a ${uname || 'unknown'} board; its decoders run on ONNX Runtime` };
  const out = join(dest, prebuiltAddon(arch));
  if (arch === process.arch) {
    const own = join(root, 'kernels', 'build', 'Release', ADDON_FILE);
    if (!existsSync(own)) return { note: `the native kernels are not built here (node kernels/build.mjs); the board's decoders run on ONNX Runtime` };
    await mkdir(dirname(out), { recursive: true });
    await copyFile(own, out);
    return { file: out, how: 'copied' };
  }
  const cc = CROSS[arch];
  const headers = join(dirname(process.execPath), '..', 'include', 'node');
  if (!cc || process.arch !== 'x64') return { note: `no cross compiler from ${process.arch} to ${arch} is known; the board's decoders run on ONNX Runtime` };
  if (!existsSync(join(headers, 'node_api.h'))) return { note: `this Node has no N-API headers (${headers}) to build the board's native kernels; its decoders run on ONNX Runtime` };
  await mkdir(dirname(out), { recursive: true });
  const t = await gypTarget(root);
  const r = await execa(cc, [...t.cflags, '-fPIC', '-shared', `-I${headers}`, '-o', out, ...t.sources, ...t.libraries], { reject: false, cancelSignal: signal });
  if (r.failed) {
    const why = (r as { code?: string }).code === 'ENOENT' ? `${cc} is not installed (apt-get install gcc-aarch64-linux-gnu)` : `${cc} failed: ${String(r.stderr).trim().split('\n').pop()}`;
    return { note: `the board's native kernels were not built: ${why}; its decoders run on ONNX Runtime` };
  }
  return { file: out, how: 'cross-compiled' };
}
