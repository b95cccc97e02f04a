/**
 * The nanomind runtime on the board: this very package, runtime files only, packed with `npm pack` and installed with
 * `npm install --omit=dev` into a runtime folder (default `~/.nanomind/runtime`). A board whose runtime
 * has the same version as this nanomind is left alone. onnxruntime-node and sharp ship linux-arm64
 * binaries in their npm packages, and the native kernels go prebuilt for the board's architecture
 * (./kernels-prebuild.ts), so the install needs the npm registry but no compiler.
 */
import { readFileSync } from 'node:fs';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { fail } from '../errors.js';
import type { Transport } from './transport.js';
import { makeTemp, removeTemp } from '../util/temp.js';
import { PREBUILDS_DIR, prebuildKernels, type Prebuild } from './kernels-prebuild.js';

export const DEFAULT_RUNTIME_DIR = '.nanomind/runtime';

/** The package root (src/deploy or dist/deploy → two levels up). */
export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function localVersion(root = PACKAGE_ROOT): string {
  return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
}

export type RuntimeAction = 'skip' | 'up-to-date' | 'install';

export function runtimeAction(remoteVersion: string, local: string, skip: boolean): RuntimeAction {
  if (skip) return 'skip';
  return remoteVersion === local ? 'up-to-date' : 'install';
}

/**
 * What the board's runtime needs from this package: the CLI, the compiled code and the target profiles.
 * Not models/ (the embedded demo model, 14 MB), README or anything else `files` ships for a developer's
 * install: the board gets bundles by `deploy`, not from the package.
 */
export const RUNTIME_FILES = ['bin', 'dist', 'targets'] as const;

/**
 * A copy of the package holding only RUNTIME_FILES, the native kernels prebuilt for a board of architecture
 * `uname` (when they can be), and a package.json that ships just those (no scripts, no devDependencies), in
 * `dir`: `npm pack` there gives the runtime-only tarball.
 */
export async function stageRuntimePackage(root: string, dir: string, uname: string, signal?: AbortSignal): Promise<Prebuild> {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as Record<string, unknown>;
  delete pkg.scripts;
  delete pkg.devDependencies;
  for (const d of RUNTIME_FILES) await cp(join(root, d), join(dir, d), { recursive: true });
  const kernels = await prebuildKernels(root, uname, dir, signal);
  pkg.files = [...RUNTIME_FILES, ...(kernels.file ? [PREBUILDS_DIR] : [])];
  await writeFile(join(dir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  return kernels;
}

/** The local `npm pack` (no lifecycle scripts: dist/ is already built by `npm ci`/`prepare`). */
export const packCommand = (root: string, dest: string) =>
  ({ file: 'npm', args: ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], cwd: root });

/** $1 = runtime folder, $2 = tarball name inside it. Keeps a package.json so `npm install` stays local. */
export const INSTALL_SCRIPT = String.raw`
R=$1; TGZ=$2
cd "$R" || exit 3
[ -f package.json ] || printf '{"private":true,"name":"nanomind-runtime"}\n' > package.json
# The board runs ONNX Runtime's CPU build (bundled); skip its CUDA download on x64 Linux targets.
ONNXRUNTIME_NODE_INSTALL=skip npm install --omit=dev --no-audit --no-fund --loglevel=error "./$TGZ" || exit 6
node -e "process.stdout.write('installed=' + require('./node_modules/nanomind/package.json').version + '\n')"
rm -f "./$TGZ"
`;

/** The argv prefix that runs the installed runtime's CLI (paths relative to the remote home). */
export const remoteNanomindCommand = (runtimeDir: string): string[] => ['node', `${runtimeDir}/node_modules/nanomind/bin/nanomind.js`];

/** Installs the runtime for a board of architecture `uname`; the installed version and what became of the kernels. */
export async function installRuntime(t: Transport, o: { runtimeDir: string; uname: string; root?: string; signal?: AbortSignal; onOutput?: (s: string) => void }):
  Promise<{ version: string; kernels: Prebuild }> {
  const root = o.root ?? PACKAGE_ROOT;
  const tmp = await makeTemp('pack');
  try {
    const staged = join(tmp, 'package');
    await mkdir(staged);
    const kernels = await stageRuntimePackage(root, staged, o.uname, o.signal);
    const cmd = packCommand(staged, tmp);
    const packed = await execa(cmd.file, cmd.args, { cwd: cmd.cwd, reject: false, cancelSignal: o.signal });
    if (packed.failed) throw fail('E_DEPLOY_RUNTIME', `npm pack failed for ${root}: ${String(packed.stderr).trim().split('\n').pop()}`, { hint: 'run `npm ci` (it builds dist/) and retry, or pass --skip-runtime' });
    const name = (JSON.parse(String(packed.stdout)) as { filename: string }[])[0].filename;
    const mk = await t.sh('mkdir -p "$1"', [o.runtimeDir], { signal: o.signal });
    if (mk.exitCode !== 0) throw fail('E_DEPLOY_RUNTIME', `cannot create ${o.runtimeDir} on the board: ${mk.stderr.trim()}`);
    await t.push(tmp, o.runtimeDir, [{ local: join(tmp, name), rel: name, bytes: 0 }], { signal: o.signal });
    const r = await t.sh(INSTALL_SCRIPT, [o.runtimeDir, name], { signal: o.signal, onStdout: o.onOutput, onStderr: o.onOutput });
    const installed = /^installed=(.+)$/m.exec(r.stdout)?.[1];
    if (r.exitCode !== 0 || !installed)
      throw fail('E_DEPLOY_RUNTIME', `npm install of the runtime failed on the board (exit ${r.exitCode})`,
        { notes: r.stderr.trim().split('\n').slice(-10), hint: 'the board needs Node >= 20 with npm and access to the npm registry; or install nanomind there yourself and pass --skip-runtime' });
    return { version: installed, kernels };
  } finally {
    await removeTemp(tmp);
  }
}
