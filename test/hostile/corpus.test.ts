/**
 * Every command that reads models, over the generated corpus of malformed and hostile inputs
 * (./corpus.ts): each case is refused with its error code in one `error[CODE]` line, exit 1, no stack
 * trace, and nothing written (the -o folder's parent and the temp dir are listed before and after).
 * Oracle: the corpus' own expected codes, and the file system.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { BIN } from '../cli-helper.js';
import { writeCorpus, type CorpusCase } from './corpus.js';

let root: string, cases: CorpusCase[];
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-corpus-'));
  for (const d of ['cases', 'outside', 'tmp', 'outs']) await mkdir(join(root, d));
  cases = await writeCorpus(join(root, 'cases'), join(root, 'outside'));
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

/** Runs the CLI with its own temp dir (TMPDIR) and output parent, both empty before. */
async function cli(args: string[], tag = 'x'): Promise<{ code: number; stdout: string; stderr: string; left: string[] }> {
  const [tmp, outs] = [join(root, 'tmp', tag), join(root, 'outs', tag)];
  await Promise.all([mkdir(tmp), mkdir(outs)]);
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args.map((a) => a.replace('@OUT', outs))], { env: { ...process.env, CI: 'true', TMPDIR: tmp }, maxBuffer: 64 << 20 },
      (e, stdout, stderr) => resolve({ code: e ? (e as { code: number }).code : 0, stdout, stderr }));
    child.stdin!.end();
  });
  const left = [...await readdir(outs), ...await readdir(tmp)];
  await Promise.all([rm(tmp, { recursive: true }), rm(outs, { recursive: true })]);
  return { ...r, left };
}

const argsFor = (verb: string, c: CorpusCase, json: boolean): string[] => [
  verb, c.path,
  ...(verb === 'partition' ? ['-o', join('@OUT', 'bricks')] : verb === 'run' ? ['--prompt', 'hi', '--max-tokens', '1'] : []),
  ...(json ? ['--json'] : []),
];

describe('malformed and hostile inputs', () => {
  it('the corpus has every kind of case the issue lists', () => {
    expect(cases.map((c) => c.name)).toEqual(expect.arrayContaining(['raw-data-short', 'negative-dims', 'overflowing-dims', 'absurd-shape-no-data',
      'constant-claims-more', 'undefined-input', 'unproduced-output', 'undeclared-domain', 'duplicate-producer', 'cycle', 'symlinked-model', 'tokenizer-not-json', 'config-wrong-types', 'preprocessor-wrong-types']));
  });

  it('each case, through each command that reads models: one error line, exit 1, nothing written', async () => {
    const failures: string[] = [];
    const jobs = cases.flatMap((c) => c.verbs.map((verb) => ({ c, verb })));
    // Two at a time: the CI machine has two cores.
    const worker = async () => {
      for (let j = jobs.shift(); j; j = jobs.shift()) {
        const { c, verb } = j;
        const where = `${verb} ${c.name}`;
        const r = await cli(argsFor(verb, c, false), `${verb}-${c.name}`);
        const first = r.stderr.split('\n')[0];
        if (r.code !== 1) failures.push(`${where}: exit ${r.code}: ${r.stderr.slice(0, 300)}`);
        else if (!first.startsWith(`error[${c.expect}] `)) failures.push(`${where}: ${first}`);
        if (/internal error|\n\s+at /.test(r.stderr)) failures.push(`${where}: stack trace`);
        if (r.stdout !== '') failures.push(`${where}: stdout ${r.stdout.slice(0, 100)}`);
        if (r.left.length) failures.push(`${where}: left ${r.left.join(', ')}`);
      }
    };
    await Promise.all([worker(), worker()]);
    expect(failures).toEqual([]);
  }, 120_000);

  it('chat, bench and eval (which partition a model folder first) refuse them the same way', async () => {
    const failures: string[] = [];
    const picked = cases.filter((c) => ['raw-data-short', 'symlinked-model', 'tokenizer-not-json', 'config-wrong-types'].includes(c.name));
    expect(picked).toHaveLength(4);
    for (const c of picked)
      for (const verb of ['chat', 'bench', 'eval']) {
        const r = await cli([verb, c.path], `${verb}-${c.name}`);
        const where = `${verb} ${c.name}`;
        if (r.code !== 1 || !r.stderr.startsWith(`error[${c.expect}] `)) failures.push(`${where}: exit ${r.code}: ${r.stderr.slice(0, 300)}`);
        if (/internal error|\n\s+at /.test(r.stderr)) failures.push(`${where}: stack trace`);
        if (r.left.length) failures.push(`${where}: left ${r.left.join(', ')}`);
      }
    expect(failures).toEqual([]);
  }, 60_000);

  it('a Hugging Face cache snapshot (files linking to ../../blobs) is not an escape', async () => {
    const repo = join(root, 'hf', 'models--org--tiny');
    await mkdir(join(repo, 'blobs'), { recursive: true });
    await mkdir(join(repo, 'snapshots', 'abc123'), { recursive: true });
    await copyFile(join(EMBEDDED_MODEL, 'monolithic', 'model.onnx'), join(repo, 'blobs', 'f00d'));
    await symlink(join('..', '..', 'blobs', 'f00d'), join(repo, 'snapshots', 'abc123', 'model.onnx'));
    const r = await cli(['inspect', join(repo, 'snapshots', 'abc123')]);
    expect(r.code, r.stderr).toBe(0);
    // The same link from a folder that is not a cache snapshot is refused.
    await mkdir(join(repo, 'plain'));
    await symlink(join('..', 'blobs', 'f00d'), join(repo, 'plain', 'model.onnx'));
    expect((await cli(['inspect', join(repo, 'plain')])).stderr).toMatch(/^error\[E_PATH_ESCAPE\] /);
  });

  it('under --json, the error JSON and nothing else; inspect lists every problem of an invalid graph', async () => {
    for (const c of cases.filter((x) => x.name === 'undefined-input' || x.name === 'tokenizer-wrong-types')) {
      const r = await cli(argsFor('partition', c, true));
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout).error.code).toBe(c.expect);
      expect(r.stderr).toBe('');
    }
    const one = await cli(['inspect', cases.find((c) => c.name === 'undefined-input')!.path, '--json']);
    expect(one.code).toBe(1);
    expect(JSON.parse(one.stdout).error).toMatchObject({ code: 'E_ONNX_INVALID', notes: [expect.stringContaining("'nowhere'")] });
    const two = await cli(['inspect', cases.find((c) => c.name === 'two-problems')!.path, '--json']);
    expect(two.code).toBe(1);
    expect(JSON.parse(two.stdout).error.notes).toEqual([expect.stringContaining('com.example.evil'), expect.stringContaining("'nowhere'")]);
  }, 60_000);
});
