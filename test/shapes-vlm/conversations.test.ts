/**
 * The embedded model holds a conversation (issue 16 part 6): `nanomind eval`'s conversation mode on the
 * committed 5-turn conversations (models/shapes-vlm/eval/conversations.jsonl, unseen scenes).
 *
 * Oracles, both written by tools/shapes-vlm/export.py from PyTorch, not by nanomind:
 * - `conversation_prompt_ids`: the token ids PyTorch fed on each turn of conv-0000 (its chat template in
 *   Python, its own earlier answers in the history); chat's Conversation must feed exactly these.
 * - `conversation_answers`: PyTorch's greedy answer on every turn; nanomind's must equal ≥ 98 % of them.
 * The accuracy bars are nanomind's own measured numbers with a margin (README, "The embedded model").
 */
import { mkdir, mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Conversation } from '../../src/chat/session.js';
import { evaluateConversations, loadConversationSet, type ConversationReport } from '../../src/eval/conversations.js';
import { EMBEDDED_EVAL_SET } from '../../src/eval/embedded.js';
import { normalizeAnswer } from '../../src/eval/index.js';
import { openEvalModel } from '../../src/eval/open.js';
import { cli } from '../cli-helper.js';
import { code } from '../error-codes.js';

/** Exact match per turn and per conversation (all 5 turns right), float model; measured values in the README. */
const BAR_TURN = 0.8;
const BAR_ALL = 0.5;

let reference: { conversation_answers: Record<string, string[]>; conversation_prompt_ids: Record<string, number[][]> };
let work: string;
beforeAll(async () => {
  reference = JSON.parse(await readFile(join(EMBEDDED_EVAL_SET, 'reference.json'), 'utf8'));
  work = await mkdtemp(join(tmpdir(), 'nanomind-conv-'));
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

describe('conversation eval of the embedded model', () => {
  let r: ConversationReport;

  it('chat feeds, turn by turn, the ids PyTorch was run on (template, image in turn 1, own answers in the history)', async () => {
    const [id, fed] = Object.entries(reference.conversation_prompt_ids)[0]!;
    const item = (await loadConversationSet(EMBEDDED_EVAL_SET)).find((c) => c.id === id)!;
    expect(fed).toHaveLength(item.turns.length);
    const opened = await openEvalModel(undefined);
    const chat = new Conversation(opened.model, { maxNewTokens: 32, sampling: { temperature: 0 } });
    try {
      await chat.attach('image', join(EMBEDDED_EVAL_SET, item.image));
      for (const [k, t] of item.turns.entries()) {
        const a = await chat.send(t.question);
        expect(chat.lastPromptIds, `${id} turn ${k + 1}`).toEqual(fed[k]);
        expect(a.text).toBe(reference.conversation_answers[id]![k]);
      }
    } finally {
      await opened.close();
    }
  });

  it('meets its bars, answers as PyTorch on ≥ 98 % of turns, and reuses the KV cache on every follow-up', async () => {
    r = await evaluateConversations();
    expect(r.conversations).toBe(40);
    expect(r.answers).toHaveLength(200);
    expect(r.perTurn).toHaveLength(5);
    const same = r.answers.filter((a) => normalizeAnswer(a.got) === normalizeAnswer(reference.conversation_answers[a.id]![a.turn - 1]!));
    expect(same.length / r.answers.length).toBeGreaterThanOrEqual(0.98);
    for (const [k, acc] of r.perTurn.entries()) expect(acc, `turn ${k + 1}`).toBeGreaterThanOrEqual(BAR_TURN);
    expect(r.allRight).toBeGreaterThanOrEqual(BAR_ALL);
    // scores recomputed from the answers
    const ids = [...new Set(r.answers.map((a) => a.id))];
    expect(r.allRight).toBe(ids.filter((id) => r.answers.filter((a) => a.id === id).every((a) => a.ok)).length / ids.length);
    // turn 1 starts from /reset (nothing cached); every follow-up reuses at least the whole earlier turns
    for (const a of r.answers) {
      if (a.turn === 1) expect(a.reusedTokens, a.id).toBe(0);
      else expect(a.reusedTokens, `${a.id} turn ${a.turn}`).toBeGreaterThan(20);
    }
  }, 120_000);

  it('the CLI prints both tables by default and the conversation report with --mode conversations --json', async () => {
    const both = await cli('eval', '--limit', '5');
    expect(both.code).toBe(0);
    expect(both.stdout).toMatch(/5 questions from/);
    expect(both.stdout).toMatch(/5 conversations of up to 5 turns/);
    const j = await cli('eval', '--mode', 'conversations', '--limit', '3', '--json');
    expect(j.code).toBe(0);
    const c = JSON.parse(j.stdout) as ConversationReport;
    expect(c.conversations).toBe(3);
    expect(c.answers.map((a) => a.turn)).toEqual([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]);
    const bad = await cli('eval', '--mode', 'chats', '--json');
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout || bad.stderr).error.code).toBe('E_USAGE');
  }, 60_000);

  it('refuses a malformed conversation set with E_EVAL_SET', async () => {
    const dir = join(work, 'bad');
    await mkdir(join(dir, 'images'), { recursive: true });
    await copyFile(join(EMBEDDED_EVAL_SET, 'images', 'conv-0000.png'), join(dir, 'images', 'a.png'));
    await writeFile(join(dir, 'conversations.jsonl'), JSON.stringify({ id: 'a', image: 'images/a.png', turns: [{ question: 'count the shapes.' }] }) + '\n');
    expect(await code(evaluateConversations({ set: dir }))).toBe('E_EVAL_SET');
    await writeFile(join(dir, 'conversations.jsonl'), JSON.stringify({ id: 'a', image: '../x.png', turns: [{ question: 'q', answer: 'a', type: 'count' }] }) + '\n');
    expect(await code(evaluateConversations({ set: dir }))).toBe('E_PATH_ESCAPE');
    expect(await code(evaluateConversations({ set: join(work, 'missing') }))).toBe('E_EVAL_SET');
  });
});
