import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { fail } from '../errors.js';
import type { ConversationReport } from '../eval/conversations.js';
import type { EvalReport } from '../eval/index.js';
import { ENGINE_OPTION, parseEngine, parseNumber } from './flags.js';
import { emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface EvalFlags { set?: string; mode?: string; limit?: string; threads?: string; engine?: string; json?: boolean; answers?: boolean }

const MODES = ['both', 'questions', 'conversations'] as const;
type Mode = (typeof MODES)[number];

const pct = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${(100 * x).toFixed(1)} %`);

export const evalVerb = (program: Command) => program
  .command('eval [model]')
  .description('exact-match accuracy on a question set, by question type and modality, and on multi-turn conversations (default: the embedded model)')
  .option('--set <builtin|dir>', 'question set: builtin (the embedded held-out set) or a folder with eval.jsonl and/or conversations.jsonl', 'builtin')
  .option('--mode <mode>', 'both | questions | conversations (both: the conversations too when the set has conversations.jsonl)', 'both')
  .option('--limit <n>', 'evaluate at most n items (and n conversations), spread evenly over the set')
  .option('--threads <n>', 'CPU threads per brick')
  .option(...ENGINE_OPTION)
  .option('--answers', 'list every answer next to the expected one')
  .option('--json', 'print the report as JSON (both: the question report with a "conversations" field)')
  .action(async (model: string | undefined, f: EvalFlags) => {
    const mode = f.mode as Mode;
    if (!MODES.includes(mode)) throw fail('E_USAGE', `--mode '${f.mode}' is not one of ${MODES.join(', ')}`, { hint: '--mode conversations scores 5-turn chats only' });
    const { evaluate } = await import('../eval/index.js');
    const { evaluateConversations, conversationSetDir, CONVERSATION_FILE } = await import('../eval/conversations.js');
    const limit = parseNumber('--limit', f.limit, { min: 1, integer: true });
    const threads = parseNumber('--threads', f.threads, { min: 1, integer: true });
    const engine = parseEngine(f.engine);
    const progress = () => {
      let bar: ReturnType<typeof stageProgress> | undefined;
      return (done: number, total: number, label: string) => { bar ??= stageProgress(total, f.json); bar.stage(label); if (done === total) bar.stop(); };
    };
    let questions: EvalReport | undefined;
    if (mode !== 'conversations') {
      const p = progress();
      questions = await evaluate({ model, set: f.set, limit, threads, engine, onItem: (d, t, a) => p(d, t, `${a.id} ${a.ok ? '✓' : '✗'}`) });
    }
    let conversations: ConversationReport | undefined;
    if (mode === 'conversations' || existsSync(join(conversationSetDir(f.set), CONVERSATION_FILE))) {
      const p = progress();
      conversations = await evaluateConversations({ model, set: f.set, limit, threads, engine, onTurn: (d, t, a) => p(d, t, `${a.id} turn ${a.turn} ${a.ok ? '✓' : '✗'}`) });
    }
    const report = questions ? (conversations ? { ...questions, conversations } : questions) : conversations!;
    emit(report, f.json, () => (questions ? renderQuestions(questions, f.answers) : '') + (conversations ? renderConversations(conversations, f.answers) : ''));
  });

function renderQuestions(r: EvalReport, answers?: boolean): string {
  let out = `${r.n} questions from ${r.set}\nmodel ${r.model}\n`;
  out += `accuracy: overall ${pct(r.accuracy.overall)}, typed ${pct(r.accuracy.typed)}, spoken ${pct(r.accuracy.spoken)} (exact match, nanomind runtime, greedy)\n`;
  out += table(['type', 'typed', 'spoken', 'all'], Object.keys(r.byType).map((t) => [t, pct(r.byTypeAndModality[`${t}/typed`] ?? null), pct(r.byTypeAndModality[`${t}/spoken`] ?? null), pct(r.byType[t])]));
  if (answers) out += table(['id', 'expected', 'got', ''], r.answers.map((a) => [a.id, a.expected, a.got, a.ok ? '✓' : '✗']));
  return out + `${(r.ms / 1000).toFixed(1)} s\n`;
}

function renderConversations(r: ConversationReport, answers?: boolean): string {
  const n = r.perTurn.length;
  let out = `\n${r.conversations} conversations of up to ${n} turns from ${r.set} (chat's session: history with its own answers, KV prefix reused)\n`;
  out += table(['', ...r.perTurn.map((_, k) => `turn ${k + 1}`), 'all turns right'], [['exact match', ...r.perTurn.map(pct), pct(r.allRight)]]);
  out += table(['type', 'all turns'], Object.entries(r.byType).map(([t, a]) => [t, pct(a)]));
  if (answers) out += table(['id', 'turn', 'question', 'expected', 'got', ''], r.answers.map((a) => [a.id, a.turn, a.question, a.expected, a.got, a.ok ? '✓' : '✗']));
  return out + `${r.reusedTokens} prompt tokens reused from the KV cache · ${(r.ms / 1000).toFixed(1)} s\n`;
}
