import type { Command } from 'commander';
import { bytes, emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface DemoFlags { out?: string; json?: boolean }

export const demoVerb = (program: Command) => program
  .command('demo')
  .description('run the embedded trained model through partition → quantize → compile → run (offline, under a minute)')
  .option('-o, --out <dir>', 'keep the work here (default: a temp dir, removed afterwards)')
  .option('--json', 'print the result as JSON')
  .action(async (f: DemoFlags) => {
    const { runDemo } = await import('../demo/index.js');
    const progress = stageProgress(undefined, f.json);
    const result = await runDemo({ out: f.out, onStage: (s) => progress.stage(s) }).finally(() => progress.stop());
    emit(result, f.json, (r) => {
      let out = 'nanomind demo: the embedded shapes-vlm model (trained; image + typed or spoken question → short answer)\n\n';
      out += table(['stage', 'time', 'what happened'], r.stages.map((s) => [s.name, `${(s.ms / 1000).toFixed(1)} s`, s.detail]));
      out += '\n' + table(['brick', 'kind', 'placed on', 'format there', 'file in bundle'], r.bricks.map((b) => [
        b.name, b.kind, b.accelerator, b.format, `${b.sourceFormat}, ${bytes(b.bytes)}${b.format !== b.sourceFormat ? ' (for rknn-toolkit2 to convert)' : ''}`]));
      out += '\n' + table(['', 'question', 'expected', 'answer'], r.examples.map((e) => [
        e.ok ? '✓' : '✗', e.modality === 'spoken' ? `(spoken: ${e.audio}) "${e.question}"` : e.question, e.expected, e.got]));
      out += `\n${r.correct}/${r.examples.length} correct; total ${(r.totalMs / 1000).toFixed(1)} s; ${r.kept ? `work kept in ${r.dir}` : 'temp work removed'}\n`;
      out += 'Bricks placed on the NPU/GPU ran on ONNX Runtime CPU here (same ONNX files); RK3588 timings come from `nanomind plan --simulate` (estimates).\n';
      return out;
    });
  });
