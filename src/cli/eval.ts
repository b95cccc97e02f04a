import type { Command } from 'commander';
import type { EvalReport } from '../eval/index.js';
import { parseNumber } from './flags.js';
import { emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface EvalFlags { set?: string; limit?: string; threads?: string; json?: boolean; answers?: boolean }

const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)} %`);

export const evalVerb = (program: Command) => program
  .command('eval [model]')
  .description('exact-match accuracy on a question set, by question type and modality (default: the embedded model)')
  .option('--set <builtin|dir>', 'question set: builtin (the embedded held-out set) or a folder with eval.jsonl', 'builtin')
  .option('--limit <n>', 'evaluate at most n items, spread evenly over the set')
  .option('--threads <n>', 'CPU threads per brick')
  .option('--answers', 'list every answer next to the expected one')
  .option('--json', 'print the report as JSON')
  .action(async (model: string | undefined, f: EvalFlags) => {
    const { evaluate } = await import('../eval/index.js');
    const limit = parseNumber('--limit', f.limit, { min: 1, integer: true });
    let bar: ReturnType<typeof stageProgress> | undefined;
    const report = await evaluate({
      model, set: f.set, limit, threads: parseNumber('--threads', f.threads, { min: 1, integer: true }),
      onItem: (done, total, a) => { bar ??= stageProgress(total, f.json); bar.stage(`${a.id} ${a.ok ? '✓' : '✗'}`); if (done === total) bar.stop(); },
    });
    emit(report, f.json, (r: EvalReport) => {
      let out = `${r.n} questions from ${r.set}\nmodel ${r.model}\n`;
      out += `accuracy: overall ${pct(r.accuracy.overall)}, typed ${pct(r.accuracy.typed)}, spoken ${pct(r.accuracy.spoken)} (exact match, nanomind runtime, greedy)\n`;
      out += table(['type', 'typed', 'spoken', 'all'], Object.keys(r.byType).map((t) => [t, pct(r.byTypeAndModality[`${t}/typed`] ?? null), pct(r.byTypeAndModality[`${t}/spoken`] ?? null), pct(r.byType[t])]));
      if (f.answers) out += table(['id', 'expected', 'got', ''], r.answers.map((a) => [a.id, a.expected, a.got, a.ok ? '✓' : '✗']));
      return out + `${(r.ms / 1000).toFixed(1)} s\n`;
    });
  });
