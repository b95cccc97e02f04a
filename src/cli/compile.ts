import type { Command } from 'commander';
import type { CompileResult } from '../compile/index.js';
import type { PlaceOverride } from '../compile/placement.js';
import { fail } from '../errors.js';
import { collect, parseNumber } from './flags.js';
import { bytes, emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface CompileFlags {
  target: string; out: string; objective: string; place: string[]; explain?: boolean; json?: boolean;
  maxContext?: string; promptTokens?: string; outputTokens?: string; rknn?: boolean; calib?: string;
  engine: string; nativeBits?: string;
}

const OBJECTIVES = ['latency', 'energy', 'balanced'];
const FORMATS = ['fp32', 'fp16', 'w8a8', 'w8a16', 'w4a16-g32', 'w4a16-g128'];

/** `--place vision=npu` or `--place decoder=cpu-big:w4a16-g32` (repeatable, or comma separated). */
export function parsePlace(items: readonly string[]): PlaceOverride[] {
  return items.map((item) => {
    const m = /^([a-z0-9_-]+)=([a-z0-9-]+)(?::([a-z0-9-]+))?$/.exec(item);
    if (!m || (m[3] && !FORMATS.includes(m[3])))
      throw fail('E_USAGE', `--place '${item}': expected brick=accelerator[:format], e.g. vision=npu or decoder=cpu-big:w4a16-g32`);
    return { brick: m[1], accelerator: m[2], format: m[3] as PlaceOverride['format'] };
  });
}

export const compileVerb = (program: Command) => program
  .command('compile <bricks-dir>')
  .description('place each brick on its best accelerator of a target board and write a deployable bundle with a schedule plan')
  .requiredOption('--target <name>', 'target profile: rk3588, rk3576, rk3566, raspberry-pi-5, host, or a path to a profile .json')
  .requiredOption('-o, --out <dir>', 'output bundle directory (written atomically)')
  .option('--objective <what>', 'minimize latency | energy | balanced', 'balanced')
  .option('--place <brick=acc[:format]>', 'force a brick onto an accelerator (and format), e.g. vision=npu', collect, [])
  .option('--explain', 'print every alternative per brick with predicted ms, mJ and MB, and why it lost')
  .option('--max-context <tokens>', 'KV cache size (default: the model\'s max positions, at most 4096)')
  .option('--prompt-tokens <n>', 'text tokens of the reference request the placement optimizes (default: 32)')
  .option('--output-tokens <n>', 'generated tokens of the reference request (default: 64)')
  .option('--calib <dir>', 'images / WAVs or a question set (prepared by the model\'s own processor), or builtin (the embedded model), that rknn-toolkit2 calibrates int8 NPU conversions with; without it float bricks go to the NPU in fp16')
  .option('--no-rknn', 'do not run rknn-toolkit2 even when it is installed; only write convert_rknn.py')
  .option('--engine <auto|native|ort>', 'auto/native: also pack a CPU-placed Llama/Qwen decoder for the native kernels (ONNX stays the fallback; auto: silently skipped, with a note, when the lift does not recognise it); ort: pack nothing', 'auto')
  .option('--native-bits <4|8>', "weight format of the native pack: 4 (Q4, block 32, fp16 scales) or 8 (Q8); default: the decoder's format (4-bit → 4, else 8)")
  .option('--json', 'print the result as JSON')
  .action(async (dir: string, f: CompileFlags) => {
    if (!OBJECTIVES.includes(f.objective)) throw fail('E_USAGE', `--objective '${f.objective}': expected ${OBJECTIVES.join(', ')}`);
    if (f.engine !== 'auto' && f.engine !== 'ort' && f.engine !== 'native') throw fail('E_USAGE', `--engine '${f.engine}': expected auto, native or ort`);
    if (f.nativeBits !== undefined && f.nativeBits !== '4' && f.nativeBits !== '8') throw fail('E_USAGE', `--native-bits '${f.nativeBits}': expected 4 or 8`);
    if (f.nativeBits !== undefined && f.engine === 'ort') throw fail('E_USAGE', '--native-bits: --engine ort packs nothing', { hint: 'drop --native-bits, or use --engine auto / native' });
    const { compile } = await import('../compile/index.js');
    const progress = stageProgress(undefined, f.json);
    let r: CompileResult;
    try {
      r = await compile({
        bricks: dir, target: f.target, out: f.out, objective: f.objective as 'balanced', place: parsePlace(f.place), rknn: f.rknn === false ? 'skip' : 'auto', calib: f.calib,
        engine: f.engine, nativeBits: f.nativeBits === undefined ? undefined : Number(f.nativeBits) as 4 | 8,
        maxContext: parseNumber('--max-context', f.maxContext, { min: 1, integer: true }),
        workload: {
          ...(f.promptTokens !== undefined && { promptTokens: parseNumber('--prompt-tokens', f.promptTokens, { min: 1, integer: true }) }),
          ...(f.outputTokens !== undefined && { outputTokens: parseNumber('--output-tokens', f.outputTokens, { min: 1, integer: true }) }),
        },
        onStage: (s) => progress.stage(s),
      });
    } finally {
      progress.stop();
    }
    const report = {
      estimate: true, out: r.out, target: r.target.name, objective: r.placement.objective,
      placement: r.placement.bricks.map((p) => ({
        brick: p.brick, kind: p.kind, accelerator: p.accelerator, backend: p.backend, format: p.format, sourceFormat: p.sourceFormat, route: p.route,
        ...(f.explain && { alternatives: p.alternatives }),
      })),
      predicted: r.plan.predicted, ringBuffers: r.plan.ringBuffers, memoryDomains: r.plan.memory.domains,
      artifacts: r.manifest.bricks.flatMap((b) => b.artifacts.map((a) => ({ brick: b.name, kind: a.kind, path: a.path, status: a.status, note: a.note }))),
      native: r.native && { brick: r.native.brick, bits: r.native.bits, bitsFrom: r.native.bitsFrom, format: r.native.format, mb: Number((r.native.bytes / 1e6).toFixed(3)) },
      notes: r.manifest.notes,
    };
    emit(report, f.json, (x) => {
      let out = `${x.out}: bundle for ${r.target.title} (objective ${x.objective}, ${r.placement.combinations} placements compared)\n`;
      out += table(['brick', 'accelerator', 'format', 'route', 'stored as'], x.placement.map((p) => [p.brick, p.accelerator, p.format, p.route, p.sourceFormat]));
      if (f.explain)
        for (const p of r.placement.bricks) {
          out += `\n${p.brick} (${p.kind}, stored ${p.sourceFormat}) — alternatives, model-based estimates per call (${p.kind === 'decoder' ? 'prefill of the prompt; decode per token' : p.kind === 'embed' ? 'the prompt' : 'one image / clip'}):\n`;
          out += table(['', 'accelerator', 'format', 'route', 'ms', 'decode ms/tok', 'mJ', 'MB', 'why not'], p.alternatives.map((a) => [
            a.chosen ? '*' : '', a.accelerator, a.format ?? '-', a.route ?? '-', a.callMs === undefined ? '-' : a.callMs.toFixed(3),
            a.decodeMsPerToken === undefined ? '-' : a.decodeMsPerToken.toFixed(3), a.mJ === undefined || a.mJ === null ? '-' : a.mJ.toFixed(3),
            a.memoryBytes === undefined ? '-' : (a.memoryBytes / 2 ** 20).toFixed(2), a.ok ? (a.chosen ? 'chosen' : 'higher cost for the whole request') : a.reason ?? '',
          ]));
        }
      const e = x.predicted;
      out += `predicted (model-based estimate) per request: ${e.latencyMs.toFixed(3)} ms, ${e.energyMj === null ? 'energy unknown' : `${e.energyMj.toFixed(3)} mJ`}, ${bytes(e.memoryBytes)}\n`;
      for (const rb of x.ringBuffers) out += `ring buffer ${rb.from} → ${rb.to}: ${rb.slots} × ${bytes(rb.slotBytes)} (${rb.why})\n`;
      for (const d of x.memoryDomains) out += `memory domain ${d.baseDomainId} (${d.accelerator}): ${d.bricks.join(', ')} — ${bytes(d.bytes)}${d.limitBytes ? ` of ${bytes(d.limitBytes)}` : ''}\n`;
      for (const a of x.artifacts.filter((y) => y.status === 'needs-conversion')) out += `needs conversion: ${a.brick} ${a.kind} — ${a.note}\n`;
      for (const n of x.notes) out += `note: ${n}\n`;
      return out;
    });
  });
