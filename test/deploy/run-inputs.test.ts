/**
 * `deploy --run PROMPT --image F` on a loopback OpenSSH "board" (test/deploy/sshd.ts; the arm64 board
 * test does the same on emulated arm64 where that board is built): the picture goes over as a copy
 * beside the bundle, the remote run answers the question about it, and the copy is removed.
 * Oracle: the model's recorded reference answer (models/shapes-vlm/eval/reference.json).
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/deploy/index.js';
import { EMBEDDED_EVAL_SET, EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { partition } from '../../src/partition/index.js';
import { code } from '../error-codes.js';
import { sshdMissing, startSshd, type TestSshd } from './sshd.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js');
if (sshdMissing) console.warn(`deploy --run --image tests skipped: ${sshdMissing}`);

describe.skipIf(!!sshdMissing)('deploy --run with media', () => {
  let sshd: TestSshd;
  let work: string;
  let bricks: string;
  beforeAll(async () => {
    [sshd, work] = await Promise.all([startSshd(), mkdtemp(join(tmpdir(), 'nanomind-runinputs-'))]);
    bricks = join(work, 'bricks');
    await partition({ input: EMBEDDED_MODEL, out: bricks });
  });
  afterAll(async () => {
    await sshd?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('sends the image for the run, answers about it, and removes the copy', async () => {
    const reference = JSON.parse(await readFile(join(EMBEDDED_EVAL_SET, 'reference.json'), 'utf8')).answers as Record<string, string>;
    const row = (await readFile(join(EMBEDDED_EVAL_SET, 'eval.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { id: string; image: string; question: string; answer: string; modality: string })
      .find((r) => r.modality === 'typed' && r.question === 'what color is the circle?' && reference[r.id] === r.answer)!;
    const remote = join(work, 'board', 'shapes');
    const base = { bundle: bricks, to: `ssh://${sshd.user}@127.0.0.1:${sshd.port}${remote}`, ssh: { config: sshd.config }, skipRuntime: true, remoteNanomind: ['node', BIN] };
    const r = await deploy({ ...base, run: ['run', '{bundle}', '--prompt', row.question], runInputs: [{ flag: '--image', file: join(EMBEDDED_EVAL_SET, row.image) }] });
    expect(r.run?.exitCode).toBe(0);
    expect(r.run?.stdout.trim()).toBe(row.answer);
    const i = r.run!.command.indexOf('--image');
    expect(r.run!.command[i + 1]).toMatch(new RegExp(`^${remote}\\.inputs-[\\w-]+/input-0\\.png$`));
    expect(await readdir(join(remote, '..'))).toEqual(['shapes']);
    expect(await code(deploy({ ...base, runInputs: [{ flag: '--image', file: join(EMBEDDED_EVAL_SET, row.image) }] }))).toBe('E_USAGE');
    expect(await code(deploy({ ...base, run: ['run', '{bundle}', '--prompt', 'x'], runInputs: [{ flag: '--image', file: join(work, 'missing.png') }] }))).toBe('E_USAGE');
    expect(await readdir(join(remote, '..'))).toEqual(['shapes']);
  });
});
