import type { Command } from 'commander';
import type { PartitionResult } from '../partition/index.js';
import { collect, parseCuts, parseNumber } from './flags.js';
import { bytes, compactNames, emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface PartitionFlags { externalData?: string; out: string; verify?: boolean; cut: string[]; dtype?: string; splitProjector?: boolean; addKvCache?: boolean; tolerance?: string; json?: boolean }

export const partitionVerb = (program: Command) => program
  .command('partition <model>')
  .description('cut a multimodal ONNX model (file or onnx-community folder) into verified bricks')
  .requiredOption('-o, --out <dir>', 'output brick-set directory (written atomically)')
  .option('--verify', 'check the brick chain against the original with ONNX Runtime (default: on for monolithic input)')
  .option('--no-verify', 'skip the equivalence check')
  .option('--cut <brick=tensor>', 'override detection: vision|audio|embed|decoder|projector = tensor name', collect, [])
  .option('--dtype <suffix>', 'variant of a split folder: fp16, int8, uint8, quantized, q4, q4f16, bnb4 (default: fp32)')
  .option('--split-projector', 'cut the projector out of the vision encoder as its own brick')
  .option('--add-kv-cache', 'give a decoder exported without a KV cache past/present key values (monolithic input; always verified)')
  .option('--external-data <bytes>', 'write weights of at least this many bytes to <brick>.onnx_data (default: as in the source; always past 2 GB)')
  .option('--tolerance <rel>', 'max relative difference allowed by --verify (default: 1e-4)')
  .option('--json', 'print the result as JSON')
  .action(async (model: string, f: PartitionFlags) => {
    const { partition } = await import('../partition/index.js');
    const progress = stageProgress(undefined, f.json);
    let result: PartitionResult;
    try {
      result = await partition({
        input: model, out: f.out, verify: f.verify, cuts: parseCuts(f.cut), dtype: f.dtype, splitProjector: f.splitProjector, addKvCache: f.addKvCache,
        tolerance: parseNumber('--tolerance', f.tolerance, { min: 0 }), externalData: parseNumber('--external-data', f.externalData, { min: 0, integer: true }), onStage: (s) => progress.stage(s),
      });
    } finally {
      progress.stop();
    }
    const m = result.manifest;
    emit({ out: result.out, bricks: m.bricks, connections: m.connections, verify: m.verify, notes: result.notes }, f.json, (r) => {
      let out = `${r.out}: ${r.bricks.length} brick(s) from ${m.model.layout} ${m.model.id}\n`;
      out += table(['brick', 'kind', 'file', 'params', 'bytes', 'inputs', 'outputs'], r.bricks.map((b) => [
        b.name, b.kind, b.file, b.params, bytes(b.bytes),
        compactNames(b.inputs.map((i) => i.name)).join(', '), compactNames(b.outputs.map((o) => o.name)).join(', '),
      ]));
      for (const c of r.connections) out += `  ${c.from} → ${c.to}${c.merge?.mode === 'replace-rows' ? ` (replaces token ${c.merge.placeholderTokenId} rows)` : c.merge?.mode === 'prepend' ? ' (rows prepended)' : c.cross ? ' (cross-attention)' : ''}\n`;
      out += r.verify
        ? `verify: ${r.verify.ok ? 'ok' : 'FAILED'}, max abs diff ${r.verify.maxAbsDiff.toExponential(2)}, max rel diff ${r.verify.maxRelDiff.toExponential(2)} (tolerance ${r.verify.tolerance}, ONNX Runtime, seed ${r.verify.seed})\n`
        : 'verify: skipped\n';
      for (const n of r.notes) out += `note: ${n}\n`;
      return out;
    });
  });
