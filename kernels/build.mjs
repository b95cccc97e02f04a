#!/usr/bin/env node
// Builds the native kernels at install with node-gyp (npm's bundled copy when npm runs this script).
// Never fails the install: without a compiler the runtime keeps using ONNX Runtime and says so once.
// Node's own headers are used when they sit next to the node binary, so no download is needed.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const findGyp = () => {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const npmGyp = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(npmGyp)) return npmGyp;
  try { return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'); } catch { return undefined; }
};
const gyp = findGyp();
if (process.env.NANOMIND_SKIP_KERNELS) process.exit(0);
if (!gyp) {
  console.warn('nanomind: node-gyp not found; native kernels not built (ONNX Runtime will run the decoder)');
  process.exit(0);
}
const prefix = join(dirname(process.execPath), '..');
const args = [gyp, 'rebuild', '--directory', here];
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync(process.execPath, args, { stdio: process.env.NANOMIND_KERNELS_VERBOSE ? 'inherit' : 'pipe', encoding: 'utf8' });
if (r.status !== 0) {
  const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-5).join('\n');
  console.warn(`nanomind: native kernels failed to build; ONNX Runtime will run the decoder.\n${tail}`);
}
