import type { Command } from 'commander';
import { bytes, compactNames, emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface DemoFlags { out?: string; json?: boolean }

export const demoVerb = (program: Command) => program
  .command('demo')
  .description('run the built-in tiny models through the pipeline (offline, under a minute)')
  .option('-o, --out <dir>', 'keep the work here (default: a temp dir, removed afterwards)')
  .option('--json', 'print the result as JSON')
  .action(async (f: DemoFlags) => {
    const { runDemo } = await import('../demo/index.js');
    const progress = stageProgress(4, f.json);
    const result = await runDemo({ out: f.out, onStage: (s) => progress.stage(s) }).finally(() => progress.stop());
    emit(result, f.json, (r) => {
      let out = 'nanomind demo: built-in tiny models (random weights) → partition → verify with ONNX Runtime\n\n';
      for (const c of r.cases) {
        const m = c.manifest;
        out += `${c.name}  (${c.ms.toFixed(0)} ms)\n`;
        out += table(['brick', 'kind', 'params', 'bytes', 'inputs', 'outputs'], m.bricks.map((b) => [
          b.name, b.kind, b.params, bytes(b.bytes), compactNames(b.inputs.map((i) => i.name)).join(', '), compactNames(b.outputs.map((o) => o.name)).join(', ')]));
        for (const conn of m.connections) out += `  ${conn.from} → ${conn.to}${conn.merge ? ` (replaces token ${conn.merge.placeholderTokenId})` : ''}\n`;
        out += m.verify
          ? `  verify: ${m.verify.ok ? 'ok' : 'FAILED'} — max abs diff ${m.verify.maxAbsDiff.toExponential(2)}, max rel diff ${m.verify.maxRelDiff.toExponential(2)} (tolerance ${m.verify.tolerance})\n\n`
          : '  verify: adopted files are byte-identical copies of the originals\n\n';
      }
      out += `total ${(r.totalMs / 1000).toFixed(1)} s; ${r.kept ? `work kept in ${r.dir}` : 'temp work removed'}\n`;
      return out;
    });
  });
