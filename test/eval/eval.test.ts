/**
 * `eval` machinery on a generated model (random weights, so accuracy itself means nothing here): the
 * set format, exact-match scoring against what the runtime really answers, grouping, and bad sets.
 * The accuracy bars belong to the trained embedded model (issue 4), which is not committed yet.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluate, loadEvalSet, normalizeAnswer, runnableDir, spread } from '../../src/eval/index.js';
import { openModel } from '../../src/run/model.js';
import { runPrompt } from '../../src/run/run.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { code } from '../error-codes.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js');
const exec = promisify(execFile);
let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-eval-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

async function makeSet(dir: string, answerFor: (i: number) => string): Promise<void> {
  await mkdir(join(dir, 'images'), { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < 4; i++) {
    await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 60 * i, g: 200 - 40 * i, b: 30 } } }).png().toFile(join(dir, 'images', `${i}.png`));
    lines.push(JSON.stringify({ id: `typed-${i}`, image: `images/${i}.png`, question: 'what colour?', answer: answerFor(i), type: i % 2 ? 'color' : 'count', modality: 'typed' }));
  }
  await writeFile(join(dir, 'eval.jsonl'), lines.join('\n') + '\n');
}

describe('eval', () => {
  it('scores exact matches against the runtime’s own greedy answers, by type and modality', async () => {
    const llava = await fixtureDir('llava');
    const set = join(work, 'set');
    await makeSet(set, () => 'placeholder');
    // What the runtime answers for item 0 becomes its expected answer; the others stay wrong.
    const { dir, cleanup } = await runnableDir(llava.dir);
    const m = await openModel(dir);
    const first = await runPrompt(m, { prompt: 'what colour?', images: [{ file: join(set, 'images', '0.png') }] }, { maxNewTokens: 32, sampling: { temperature: 0 } });
    await m.close();
    await cleanup();
    await makeSet(set, (i) => (i === 0 ? ` ${first.text.toUpperCase()}. ` : `not-${i}`));
    const r = await evaluate({ model: llava.dir, set });
    expect(r.n).toBe(4);
    expect(r.answers[0]).toMatchObject({ id: 'typed-0', ok: normalizeAnswer(first.text) === normalizeAnswer(` ${first.text.toUpperCase()}. `) });
    expect(r.answers[0].got).toBe(first.text);
    expect(r.accuracy.overall).toBe(r.answers.filter((a) => a.ok).length / 4);
    expect(r.accuracy.spoken).toBeNull();
    expect(Object.keys(r.byType).sort()).toEqual(['color', 'count']);
  });

  it('the CLI prints {n, accuracy:{overall, typed, spoken}, byType}', async () => {
    const set = join(work, 'set-cli');
    await makeSet(set, (i) => `x${i}`);
    const { stdout } = await exec(process.execPath, [BIN, 'eval', (await fixtureDir('llava')).dir, '--set', set, '--limit', '2', '--json'], { env: { ...process.env, CI: 'true' } });
    const r = JSON.parse(stdout);
    expect(r.n).toBe(2);
    expect(r.accuracy).toEqual({ overall: 0, typed: 0, spoken: null });
    // items alternate count / color: a limit of 2 keeps one of each type
    expect(r.answers.map((a: { id: string }) => a.id)).toEqual(['typed-0', 'typed-1']);
    expect(Object.keys(r.byType).sort()).toEqual(['color', 'count']);
  });

  it('answers compare case- and full-stop-insensitively; limits spread over the set', () => {
    expect(normalizeAnswer(' Top Left. ')).toBe('top left');
    expect(normalizeAnswer('3')).not.toBe(normalizeAnswer('2'));
    expect(spread([1, 2, 3, 4, 5, 6], 3)).toEqual([1, 3, 5]);
    // a set cycling through 5 types (40 of each): a limit of 10 keeps 2 of each, not every 30th item
    const cycling = Array.from({ length: 200 }, (_, i) => ({ i, type: 'abcde'[i % 5]! }));
    const ten = spread(cycling, 10, (x) => x.type);
    expect(ten.map((x) => x.type).sort().join('')).toBe('aabbccddee');
    expect(ten.map((x) => x.i)).toEqual([...ten.map((x) => x.i)].sort((a, b) => a - b));
    // unequal groups keep their proportions (30 : 10 → 3 : 1), and a small group keeps one item
    const uneven = [...Array(30).fill('big'), ...Array(10).fill('small')].map((type, i) => ({ i, type }));
    expect(spread(uneven, 8, (x) => x.type).filter((x) => x.type === 'small')).toHaveLength(2);
    expect(spread([...Array(99).fill('a'), 'b'].map((type, i) => ({ i, type })), 5, (x) => x.type).some((x) => x.type === 'b')).toBe(true);
  });

  it('rejects a missing set, malformed lines and paths leaving the set', async () => {
    expect(await code(loadEvalSet(join(work, 'none')))).toBe('E_EVAL_SET');
    const bad = join(work, 'bad');
    await mkdir(bad, { recursive: true });
    await writeFile(join(bad, 'eval.jsonl'), '{"id":"a","question":"q","answer":"x","type":"count","modality":"typed"}\nnot json\n{"id":"b"}\n');
    const err = await loadEvalSet(bad).catch((e) => e);
    expect(err.code).toBe('E_EVAL_SET');
    expect(err.detail.notes.length).toBeGreaterThanOrEqual(2);
    await writeFile(join(bad, 'eval.jsonl'), '{"id":"a","question":"q","answer":"x","type":"count","modality":"typed","image":"../../etc/passwd"}\n');
    expect(await code(loadEvalSet(bad))).toBe('E_PATH_ESCAPE');
  });
});
