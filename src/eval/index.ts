/**
 * `eval`: exact-match accuracy of a model on a question set, measured by nanomind's own runtime, per
 * question type and per modality (typed text or spoken audio).
 *
 * An eval set is a folder with `eval.jsonl`, one item per line:
 *   {"id", "image"?: "images/x.png", "question", "answer", "type", "modality": "typed"|"spoken", "audio"?: "audio/x.wav"}
 * paths relative to the folder. A typed item asks `question` about the image; a spoken item sends the
 * image and the audio clip of the question, with no text. Multi-turn conversations (conversations.jsonl
 * in the same folder) are scored by ./conversations.ts.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { brickBackends } from '../run/brick-set.js';
import { runPrompt } from '../run/run.js';
import { resolveInside } from '../util/files.js';
import { EMBEDDED_EVAL_SET } from './embedded.js';
import type { RuntimeEngine } from '../run/brick-set.js';
import { openEvalModel } from './open.js';
import { runnableDir } from '../partition/runnable.js';

export interface EvalItem {
  readonly id: string;
  readonly image?: string;
  readonly audio?: string;
  readonly question: string;
  readonly answer: string;
  readonly type: string;
  readonly modality: 'typed' | 'spoken';
}

export interface EvalAnswer { readonly id: string; readonly type: string; readonly modality: string; readonly expected: string; readonly got: string; readonly ok: boolean }

/** What an eval report says about the runtime it ran on (shared by the question and conversation reports). */
export interface EvalRuntimeInfo {
  /** The runtime's notices (e.g. bricks placed on an accelerator this machine lacks). */
  readonly notices: readonly string[];
  /** The backend every brick ran on. */
  readonly backends: Readonly<Record<string, string>>;
  readonly ms: number;
}

export interface EvalReport extends EvalRuntimeInfo {
  readonly model: string;
  readonly set: string;
  readonly n: number;
  readonly accuracy: { readonly overall: number; readonly typed: number | null; readonly spoken: number | null };
  readonly byType: Readonly<Record<string, number>>;
  readonly byTypeAndModality: Readonly<Record<string, number>>;
  readonly answers: readonly EvalAnswer[];
}

export interface EvalOptions {
  /** Model folder, brick set or bundle; default the embedded model. */
  readonly model?: string;
  /** `builtin` (default) or a folder with eval.jsonl. */
  readonly set?: string;
  /** At most this many items, taken evenly across the set (typed and spoken alike). */
  readonly limit?: number;
  /** Only these item ids (in the set's order); unknown ids are an error. */
  readonly ids?: readonly string[];
  readonly threads?: number;
  /** The decoder's engine when it has a native pack (default 'auto'). */
  readonly engine?: RuntimeEngine;
  readonly onItem?: (done: number, total: number, a: EvalAnswer) => void;
}

/** Answers compare after trimming, lowercasing and dropping a final full stop. */
export { runnableDir };

export const normalizeAnswer = (s: string): string => s.trim().toLowerCase().replace(/\.$/, '').replace(/\s+/g, ' ');

export async function loadEvalSet(dir: string): Promise<EvalItem[]> {
  const file = join(dir, 'eval.jsonl');
  const text = await readFile(file, 'utf8').catch((e) => {
    throw fail('E_EVAL_SET', `${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'cannot read'}`, { file, hint: 'pass a folder holding eval.jsonl with --set' });
  });
  const items: EvalItem[] = [];
  const problems: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: Record<string, unknown>;
    try { v = JSON.parse(line); } catch { problems.push(`line ${i + 1}: not JSON`); return; }
    for (const k of ['id', 'question', 'answer', 'type'] as const) if (typeof v[k] !== 'string') problems.push(`line ${i + 1}: '${k}' must be a string`);
    if (v.modality !== 'typed' && v.modality !== 'spoken') problems.push(`line ${i + 1}: 'modality' must be typed or spoken`);
    if (v.modality === 'spoken' && typeof v.audio !== 'string') problems.push(`line ${i + 1}: a spoken item needs 'audio'`);
    for (const k of ['image', 'audio'] as const) if (typeof v[k] === 'string') resolveInside(dir, v[k] as string, `${file} line ${i + 1}`);
    items.push(v as unknown as EvalItem);
  });
  if (problems.length) throw fail('E_EVAL_SET', `${file}: ${problems.length} problem(s): ${problems[0]}`, { file, notes: problems });
  if (!items.length) throw fail('E_EVAL_SET', `${file}: no items`, { file });
  return items;
}

/**
 * At most `limit` items, in the set's order, keeping every group (`key`: e.g. question type and
 * modality) in proportion: each group gets its share of the limit (largest remainders first, at least
 * one while the limit allows) and gives evenly spaced items. Plain even spacing is not enough: a set
 * that cycles through 5 types, cut every 30th item, would keep one type only.
 */
export function spread<T>(items: readonly T[], limit?: number, key: (x: T) => string = () => ''): T[] {
  if (!limit || limit >= items.length) return [...items];
  const groups = new Map<string, number[]>();
  items.forEach((x, i) => { const k = key(x); if (!groups.has(k)) groups.set(k, []); groups.get(k)!.push(i); });
  const list = [...groups.values()];
  const exact = list.map((g) => (limit * g.length) / items.length);
  const share = exact.map(Math.floor);
  const order = list.map((_, k) => k).sort((a, b) => (share[a] === 0 ? 0 : 1) - (share[b] === 0 ? 0 : 1) || (exact[b] - share[b]) - (exact[a] - share[a]));
  for (let left = limit - share.reduce((a, b) => a + b, 0), j = 0; left > 0; left--, j++) share[order[j % order.length]]++;
  const picked = list.flatMap((g, k) => Array.from({ length: Math.min(share[k], g.length) }, (_, i) => g[Math.floor((i * g.length) / share[k])]!));
  return picked.sort((a, b) => a - b).map((i) => items[i]!);
}

export async function evaluate(o: EvalOptions = {}): Promise<EvalReport> {
  const t0 = performance.now();
  const setDir = resolve(!o.set || o.set === 'builtin' ? EMBEDDED_EVAL_SET : o.set);
  // (checked by loadEvalSet: a missing builtin set means the embedded model is not in this build)
  const all = await loadEvalSet(setDir);
  const unknown = (o.ids ?? []).filter((id) => !all.some((i) => i.id === id));
  if (unknown.length) throw fail('E_EVAL_SET', `${setDir}: no item with id ${unknown.map((u) => `'${u}'`).join(', ')}`);
  const items = spread(o.ids ? all.filter((i) => o.ids!.includes(i.id)) : all, o.limit, (i) => `${i.modality}/${i.type}`);
  const opened = await openEvalModel(o.model, o.threads, o.engine);
  const { path: modelPath, model: m } = opened;
  try {
    const answers: EvalAnswer[] = [];
    for (const item of items) {
      const r = await runPrompt(m, {
        prompt: item.modality === 'spoken' ? '' : item.question,
        images: item.image ? [{ file: join(setDir, item.image) }] : [],
        audio: item.modality === 'spoken' && item.audio ? [{ file: join(setDir, item.audio) }] : [],
      }, { maxNewTokens: 32, sampling: { temperature: 0 } });
      const a: EvalAnswer = { id: item.id, type: item.type, modality: item.modality, expected: item.answer, got: r.text, ok: normalizeAnswer(r.text) === normalizeAnswer(item.answer) };
      answers.push(a);
      o.onItem?.(answers.length, items.length, a);
    }
    const acc = (xs: readonly EvalAnswer[]) => (xs.length ? xs.filter((x) => x.ok).length / xs.length : null);
    const group = (key: (a: EvalAnswer) => string) => {
      const out: Record<string, number> = {};
      for (const k of [...new Set(answers.map(key))].sort()) out[k] = acc(answers.filter((a) => key(a) === k))!;
      return out;
    };
    return {
      model: modelPath, set: setDir, n: answers.length,
      accuracy: { overall: acc(answers)!, typed: acc(answers.filter((a) => a.modality === 'typed')), spoken: acc(answers.filter((a) => a.modality === 'spoken')) },
      byType: group((a) => a.type), byTypeAndModality: group((a) => `${a.type}/${a.modality}`), answers, notices: m.notices, backends: brickBackends(m.set), ms: performance.now() - t0,
    };
  } finally {
    await opened.close();
  }
}
