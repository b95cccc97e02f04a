/**
 * `eval`'s conversation mode: multi-turn exact match, each conversation held by the very `Conversation`
 * that `nanomind chat` drives (same chat template, history re-rendered with the model's own earlier
 * answers verbatim, KV cache of the prefix reused, the image encoded once in the first turn).
 *
 * A conversation set is `conversations.jsonl` in the eval folder, one conversation per line:
 *   {"id", "image": "images/x.png", "turns": [{"question", "answer", "type"}, ...]}
 * the image path relative to the folder; the image goes with the first question, the follow-ups are
 * typed about the same image. Scored per turn (turn k over every conversation that has k turns), per
 * question type, and per conversation (every turn right).
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Conversation } from '../chat/session.js';
import { fail } from '../errors.js';
import { brickBackends } from '../run/brick-set.js';
import { resolveInside } from '../util/files.js';
import { EMBEDDED_EVAL_SET } from './embedded.js';
import { normalizeAnswer, spread, type EvalRuntimeInfo } from './index.js';
import type { RuntimeEngine } from '../run/brick-set.js';
import { openEvalModel } from './open.js';

export const CONVERSATION_FILE = 'conversations.jsonl';

export interface ConversationTurn { readonly question: string; readonly answer: string; readonly type: string }
export interface ConversationItem { readonly id: string; readonly image: string; readonly turns: readonly ConversationTurn[] }

export interface TurnAnswer {
  readonly id: string;
  /** 1-based. */
  readonly turn: number;
  readonly type: string;
  readonly question: string;
  readonly expected: string;
  readonly got: string;
  readonly ok: boolean;
  readonly promptTokens: number;
  /** Prompt tokens whose KV came from the earlier turns' cache (0 on turn 1). */
  readonly reusedTokens: number;
}

export interface ConversationReport extends EvalRuntimeInfo {
  readonly model: string;
  readonly set: string;
  readonly conversations: number;
  /** Exact-match accuracy of turn k (index k − 1) over the conversations that have k turns. */
  readonly perTurn: readonly number[];
  /** Share of conversations with every turn right. */
  readonly allRight: number;
  readonly byType: Readonly<Record<string, number>>;
  /** Every turn of every conversation, in order. */
  readonly answers: readonly TurnAnswer[];
  /** Prompt tokens reused from the KV cache over all follow-up turns (prefix reuse at work). */
  readonly reusedTokens: number;
}

export interface ConversationEvalOptions {
  /** Model folder, brick set or bundle; default the embedded model. */
  readonly model?: string;
  /** `builtin` (default) or a folder with conversations.jsonl. */
  readonly set?: string;
  /** At most this many conversations, evenly spaced over the set. */
  readonly limit?: number;
  readonly threads?: number;
  /** The decoder's engine when it has a native pack (default 'auto'). */
  readonly engine?: RuntimeEngine;
  readonly onTurn?: (done: number, total: number, a: TurnAnswer) => void;
}

export const conversationSetDir = (set?: string): string => resolve(!set || set === 'builtin' ? EMBEDDED_EVAL_SET : set);

export async function loadConversationSet(dir: string): Promise<ConversationItem[]> {
  const file = join(dir, CONVERSATION_FILE);
  const text = await readFile(file, 'utf8').catch((e) => {
    throw fail('E_EVAL_SET', `${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'cannot read'}`,
      { file, hint: `pass a folder holding ${CONVERSATION_FILE} with --set, or --mode questions` });
  });
  const items: ConversationItem[] = [];
  const problems: string[] = [];
  const str = (x: unknown): x is string => typeof x === 'string';
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    const at = `line ${i + 1}`;
    let v: Record<string, unknown>;
    try { v = JSON.parse(line); } catch { problems.push(`${at}: not JSON`); return; }
    if (!str(v.id)) problems.push(`${at}: 'id' must be a string`);
    if (!str(v.image)) problems.push(`${at}: 'image' must be a string (the image the first turn asks about)`);
    else resolveInside(dir, v.image, `${file} ${at}`);
    const turns = v.turns;
    if (!Array.isArray(turns) || !turns.length) { problems.push(`${at}: 'turns' must be a non-empty array`); return; }
    turns.forEach((t: Record<string, unknown>, k) => {
      for (const key of ['question', 'answer', 'type'] as const) if (!str(t?.[key])) problems.push(`${at}: turns[${k}].${key} must be a string`);
    });
    items.push(v as unknown as ConversationItem);
  });
  if (problems.length) throw fail('E_EVAL_SET', `${file}: ${problems.length} problem(s): ${problems[0]}`, { file, notes: problems });
  if (!items.length) throw fail('E_EVAL_SET', `${file}: no conversations`, { file });
  return items;
}

export async function evaluateConversations(o: ConversationEvalOptions = {}): Promise<ConversationReport> {
  const t0 = performance.now();
  const setDir = conversationSetDir(o.set);
  const items = spread(await loadConversationSet(setDir), o.limit);
  const opened = await openEvalModel(o.model, o.threads, o.engine);
  const m = opened.model;
  try {
    // Greedy and 32 new tokens, as the question mode; one Conversation, reset between items as /reset does.
    const chat = new Conversation(m, { maxNewTokens: 32, sampling: { temperature: 0 } });
    const total = items.reduce((n, c) => n + c.turns.length, 0);
    const answers: TurnAnswer[] = [];
    for (const item of items) {
      chat.reset();
      await chat.attach('image', join(setDir, item.image));
      for (const [k, t] of item.turns.entries()) {
        const r = await chat.send(t.question);
        const a: TurnAnswer = {
          id: item.id, turn: k + 1, type: t.type, question: t.question, expected: t.answer, got: r.text,
          ok: normalizeAnswer(r.text) === normalizeAnswer(t.answer), promptTokens: r.stats.promptTokens, reusedTokens: r.stats.reusedTokens,
        };
        answers.push(a);
        o.onTurn?.(answers.length, total, a);
      }
    }
    return { model: opened.path, set: setDir, ...score(items, answers), notices: m.notices, backends: brickBackends(m.set), ms: performance.now() - t0 };
  } finally {
    await opened.close();
  }
}

/** The report's numbers from the answers (every turn of `items`, in order). */
export function score(items: readonly ConversationItem[], answers: readonly TurnAnswer[]):
  Pick<ConversationReport, 'conversations' | 'perTurn' | 'allRight' | 'byType' | 'answers' | 'reusedTokens'> {
  const acc = (xs: readonly TurnAnswer[]) => xs.filter((x) => x.ok).length / xs.length;
  const turns = Math.max(...items.map((c) => c.turns.length));
  const byType: Record<string, number> = {};
  for (const t of [...new Set(answers.map((a) => a.type))].sort()) byType[t] = acc(answers.filter((a) => a.type === t));
  return {
    conversations: items.length,
    perTurn: Array.from({ length: turns }, (_, k) => acc(answers.filter((a) => a.turn === k + 1))),
    allRight: items.filter((c) => answers.filter((a) => a.id === c.id).every((a) => a.ok)).length / items.length,
    byType, answers,
    reusedTokens: answers.reduce((n, a) => n + a.reusedTokens, 0),
  };
}
