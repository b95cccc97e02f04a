/**
 * The runtime verbs on the embedded model as a user types them: `run` and `chat` take the model folder
 * itself (partitioned into a temp brick set with a notice, removed afterwards) and answer held-out
 * questions correctly, typed and spoken.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { EMBEDDED_EVAL_SET, EMBEDDED_MODEL } from '../../src/eval/embedded.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js');
const exec = promisify(execFile);

interface Row { id: string; image: string; question: string; answer: string; modality: string; audio?: string }
/** Held-out rows the model answers right (PyTorch's answers, recorded at export, equal the reference). */
const rows = async (): Promise<Row[]> => {
  const reference = JSON.parse(await readFile(join(EMBEDDED_EVAL_SET, 'reference.json'), 'utf8')).answers as Record<string, string>;
  return (await readFile(join(EMBEDDED_EVAL_SET, 'eval.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Row)
    .filter((r) => reference[r.id] === r.answer);
};

describe('runtime verbs on the embedded model folder', () => {
  it('run answers a typed and a spoken question from the folder, with a notice, leaving no temp bricks', async () => {
    // A private temp dir: other test files (serve, chat) keep their own temp brick sets in the shared one meanwhile.
    const tmp = await mkdtemp(join(tmpdir(), 'nanomind-clitest-'));
    const env = { ...process.env, TMPDIR: tmp };
    const all = await rows();
    const typed = all.find((r) => r.modality === 'typed' && r.answer.includes(' and '))!; // a description
    const t = await exec(process.execPath, [BIN, 'run', EMBEDDED_MODEL, '--image', join(EMBEDDED_EVAL_SET, typed.image), '--prompt', typed.question, '--json'], { env });
    expect(JSON.parse(t.stdout).text).toBe(typed.answer);
    expect(t.stderr).toMatch(/^notice: .* is a model, not a brick set: partitioned into a temp brick set/m);
    const spoken = all.find((r) => r.modality === 'spoken')!;
    const s = await exec(process.execPath, [BIN, 'run', join(EMBEDDED_MODEL, 'monolithic', 'model.onnx'),
      '--image', join(EMBEDDED_EVAL_SET, spoken.image), '--audio', join(EMBEDDED_EVAL_SET, spoken.audio!)], { env });
    expect(s.stdout.trim()).toBe(spoken.answer);
    expect(await readdir(tmp)).toEqual([]);
    await rm(tmp, { recursive: true, force: true });
  }, 60_000);

  it('chat (line mode) attaches an image with /image and answers', async () => {
    const row = (await rows()).find((r) => r.modality === 'typed' && r.question.startsWith('how many'))!;
    const child = execFile(process.execPath, [BIN, 'chat', EMBEDDED_MODEL]);
    let out = '';
    child.stdout!.on('data', (d) => { out += d; });
    child.stdin!.end(`/image ${join(EMBEDDED_EVAL_SET, row.image)}\n${row.question}\n/exit\n`);
    const code = await new Promise((r) => child.on('exit', r));
    expect(code).toBe(0);
    expect(out.split('\n').map((l) => l.trim())).toContain(row.answer);
  }, 60_000);
});
