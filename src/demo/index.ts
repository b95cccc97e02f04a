/**
 * `demo`: the built-in end-to-end run on the embedded trained model (models/shapes-vlm/). Its
 * monolithic ONNX graph goes through every stage a user would run: partition (verified against ONNX
 * Runtime) → quantize (the paper's hybrid recipe) → compile for the RK3588 profile → the included
 * runtime answers a few held-out examples (typed and spoken questions about an image) from the bundle.
 */
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { compile } from '../compile/index.js';
import { EMBEDDED_EVAL_SET, EMBEDDED_MODEL } from '../eval/embedded.js';
import { evaluate, loadEvalSet, type EvalAnswer } from '../eval/index.js';
import { fail } from '../errors.js';
import { partition } from '../partition/index.js';
import { quantizeBricks } from '../quantize/index.js';
import { makeTemp, removeTemp } from '../util/temp.js';
import { checkOutputDir } from '../formats/atomic-dir.js';
import { BRICKS_FILE } from '../formats/bricks.js';
import { BUNDLE_FILE } from '../formats/bundle.js';

export interface DemoStage { readonly name: string; readonly ms: number; readonly detail: string }
export interface DemoBrick {
  readonly name: string; readonly kind: string; readonly accelerator: string;
  /** The format on its accelerator, and the format of the file in the bundle (differs for NPU bricks, which the vendor toolchain converts). */
  readonly format: string; readonly sourceFormat: string;
  /** Bytes of the bundle's file (in `sourceFormat`). */
  readonly bytes: number;
}
export interface DemoExample extends EvalAnswer { readonly question: string; readonly audio?: string }

export interface DemoResult {
  readonly model: string;
  readonly dir: string;
  readonly kept: boolean;
  readonly stages: readonly DemoStage[];
  readonly bricks: readonly DemoBrick[];
  readonly examples: readonly DemoExample[];
  readonly correct: number;
  readonly totalMs: number;
}

export interface DemoOptions {
  readonly out?: string;
  /** The model folder holding `monolithic/model.onnx` and an `eval/` set (default: the embedded model). */
  readonly model?: string;
  readonly target?: string;
  readonly onStage?: (s: string) => void;
}

/** One image + typed question per kind of question the model answers, and two spoken ones. */
const PICKS = [
  { modality: 'typed', type: 'color' }, { modality: 'typed', type: 'count' }, { modality: 'typed', type: 'describe' },
  { modality: 'spoken', type: 'shape' }, { modality: 'spoken', type: 'position' },
] as const;

export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const started = performance.now();
  const model = resolve(o.model ?? EMBEDDED_MODEL);
  const setDir = o.model ? join(model, 'eval') : EMBEDDED_EVAL_SET;
  const items = await loadEvalSet(setDir);
  const picked = PICKS.map((p) => items.find((i) => i.modality === p.modality && i.type === p.type))
    .filter((i): i is NonNullable<typeof i> => !!i);
  if (!picked.length) throw fail('E_EVAL_SET', `${setDir}: no examples for the demo`);
  if (o.out) await checkDemoOut(resolve(o.out));
  const dir = o.out ? resolve(o.out) : await makeTemp('demo');
  const stages: DemoStage[] = [];
  const timed = async <T>(name: string, fn: () => Promise<T>, detail: (r: T) => string): Promise<T> => {
    o.onStage?.(name);
    const t0 = performance.now();
    const r = await fn();
    stages.push({ name, ms: performance.now() - t0, detail: detail(r) });
    return r;
  };
  try {
    const bricks = join(dir, 'bricks'), quantized = join(dir, 'bricks-q'), bundle = join(dir, 'bundle');
    await timed('partition', () => partition({ input: join(model, 'monolithic', 'model.onnx'), out: bricks }), (r) =>
      `monolithic graph → ${r.manifest.bricks.length} bricks (${r.manifest.bricks.map((b) => b.name).join(', ')}); `
      + (r.manifest.verify ? `verified against ONNX Runtime: max rel diff ${r.manifest.verify.maxRelDiff.toExponential(1)}` : 'not verified'));
    await timed('quantize', () => quantizeBricks({ dir: bricks, out: quantized, recipe: 'hybrid', algorithm: 'rtn', compareAlgorithms: false, evaluate: false }),
      (r) => `hybrid recipe (round-to-nearest): ${r.manifest.bricks.map((b) => `${b.name} ${b.format}`).join(', ')}`);
    const compiled = await timed('compile', () => compile({ bricks: quantized, target: o.target ?? 'rk3588', out: bundle, rknn: 'skip', calib: 'builtin' }),
      (r) => `${r.target.title}: ${r.manifest.bricks.map((b) => `${b.name} → ${b.accelerator} (${b.format})`).join(', ')}`);
    const report = await timed('run', () => evaluate({ model: bundle, set: setDir, ids: picked.map((i) => i.id) }),
      (r) => `${r.n} held-out examples answered by the included runtime from the bundle`);
    const byId = new Map(picked.map((i) => [i.id, i]));
    const examples = report.answers.map((a) => ({ ...a, question: byId.get(a.id)!.question, ...(byId.get(a.id)!.audio ? { audio: byId.get(a.id)!.audio } : {}) }));
    return {
      model, dir, kept: !!o.out, stages,
      bricks: compiled.manifest.bricks.map((b) => ({ name: b.name, kind: b.kind, accelerator: b.accelerator, format: b.format, sourceFormat: b.sourceFormat, bytes: b.bytes })),
      examples, correct: examples.filter((e) => e.ok).length, totalMs: performance.now() - started,
    };
  } finally {
    if (!o.out) await removeTemp(dir);
  }
}

/** All of `-o DIR`'s outputs are checked before any is written, so a refusal leaves nothing behind. */
async function checkDemoOut(dir: string): Promise<void> {
  const st = await stat(dir).catch(() => undefined);
  if (st && !st.isDirectory()) throw fail('E_OUTPUT_EXISTS', `${dir} exists and is not a directory`, { hint: 'choose another -o path' });
  for (const [sub, marker] of [['bricks', BRICKS_FILE], ['bricks-q', BRICKS_FILE], ['bundle', BUNDLE_FILE]] as const)
    await checkOutputDir(join(dir, sub), marker);
}
