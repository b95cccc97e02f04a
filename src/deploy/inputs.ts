/**
 * Media for `deploy --run "PROMPT" --image F --audio G`: the local files are sent to a folder beside the
 * deployed bundle (`<path>.inputs-<id>`), the remote command gets `--image <that copy>`, and the folder
 * is removed afterwards, whether the run succeeded or not. Remote names are `input-<n><ext>`, so no
 * local file name (spaces, quotes) ever reaches the board's shell.
 */
import { copyFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { fail } from '../errors.js';
import { makeTemp, removeTemp } from '../util/temp.js';
import type { ExecOptions, Transport } from './transport.js';

export interface RunInput {
  readonly flag: '--image' | '--audio';
  /** Local file. */
  readonly file: string;
}

export interface StagedInputs {
  /** `flag remotePath` pairs to append to the remote argv. */
  readonly args: readonly string[];
  remove(): Promise<void>;
}

export async function stageRunInputs(t: Transport, bundlePath: string, id: string, inputs: readonly RunInput[], o: ExecOptions = {}): Promise<StagedInputs> {
  if (!inputs.length) return { args: [], remove: async () => {} };
  const sizes = await Promise.all(inputs.map(async (i) => {
    const s = await stat(i.file).catch(() => undefined);
    if (!s?.isFile()) throw fail('E_USAGE', `${i.flag} ${i.file}: no such file`);
    return s.size;
  }));
  const remoteDir = `${bundlePath}.inputs-${id}`;
  const local = await makeTemp('run-inputs');
  const files = inputs.map((i, n) => {
    const ext = extname(i.file).toLowerCase();
    return { local: join(local, `input-${n}${/^\.[a-z0-9]{1,5}$/.test(ext) ? ext : ''}`), src: i.file, bytes: sizes[n] };
  });
  const remove = async () => { await t.sh('rm -rf "$1"', [remoteDir], { signal: o.signal }).catch(() => {}); };
  try {
    await Promise.all(files.map((f) => copyFile(f.src, f.local)));
    const mk = await t.sh('mkdir -p "$1"', [remoteDir], o);
    if (mk.exitCode !== 0) throw fail('E_DEPLOY_BOARD', `cannot create ${remoteDir} on the board for the run's inputs: ${mk.stderr.trim()}`);
    const rels = files.map((f) => ({ local: f.local, rel: f.local.slice(local.length + 1), bytes: f.bytes }));
    await t.push(local, remoteDir, rels, o);
    return { args: inputs.flatMap((i, n) => [i.flag, `${remoteDir}/${rels[n].rel}`]), remove };
  } catch (e) {
    await remove();
    throw e;
  } finally {
    await removeTemp(local);
  }
}
