import type { Command } from 'commander';
import { bytes, compactNames, count, emit, flopsText, shapeText, table } from './output.js';
import { parseCuts, collect } from './flags.js';

interface InspectFlags { json?: boolean; cut: string[]; dtype?: string; splitProjector?: boolean; values?: boolean }

export const inspectVerb = (program: Command) => program
  .command('inspect <model>')
  .description('show what an ONNX model or model folder holds and the bricks partition would cut (same detection)')
  .option('--dtype <suffix>', "variant of a split folder (e.g. q4f16); default: the fp32 files")
  .option('--cut <brick=tensor>', 'override brick detection, e.g. vision=/multi_modal_projector/linear_2/Add_output_0', collect, [])
  .option('--split-projector', 'show the projector as its own brick, as `partition --split-projector` cuts it')
  .option('--values', 'also list every value a node produces (the names --cut takes), with its op, dtype and shape')
  .option('--json', 'print the report as JSON')
  .action(async (model: string, f: InspectFlags) => {
    const { inspectModel } = await import('../partition/inspect.js');
    const report = await inspectModel(model, { cuts: parseCuts(f.cut), dtype: f.dtype, splitProjector: f.splitProjector, values: f.values });
    emit(report, f.json, (r) => {
      let out = '';
      for (const file of r.files) {
        out += `${file.file}  (IR ${file.irVersion}, opsets ${Object.entries(file.opsets).map(([d, v]) => `${d}:${v}`).join(' ')}, ${file.producer || 'unknown producer'})\n`;
        out += `  inputs:  ${file.inputs.map((i) => `${i.name} ${i.dtype}${shapeText(i.shape)}`).join(', ')}\n`;
        out += `  outputs: ${file.outputs.map((i) => `${i.name} ${i.dtype}${shapeText(i.shape)}`).join(', ')}\n`;
        out += `  ${file.nodes} nodes, ${count(file.params)} parameters (${file.params}), ${bytes(file.bytes)} of initializers: ${Object.entries(file.bytesByDtype).map(([d, b]) => `${d} ${bytes(b)}`).join(', ')}\n`;
        if (file.externalFiles.length) out += `  external data: ${file.externalFiles.join(', ')}\n`;
        const ops = Object.entries(file.ops).sort((a, b) => b[1] - a[1]);
        out += `  ops: ${ops.map(([o, n]) => `${o} ${n}`).join(', ')}\n`;
        if (file.values) out += `  values (${file.values.length}):\n` + file.values.map((v) => `    ${v.name}  ${v.op} → ${v.dtype}${shapeText(v.shape)}\n`).join('');
        out += '\n';
      }
      if (r.bricks.length)
        out += table(['brick', 'kind', 'params', 'bytes', 'nodes', 'FLOPs (estimate)', 'inputs → outputs'],
          r.bricks.map((b) => [b.name, b.kind, b.params, bytes(b.bytes), b.nodes, `${flopsText(b.flops.value)}/${b.flops.per}`,
            `${compactNames(b.inputs.map((i) => i.name)).join(', ')} → ${compactNames(b.outputs.map((o) => o.name)).join(', ')}`]));
      for (const n of r.notes) out += `note: ${n}\n`;
      return out;
    });
  });
