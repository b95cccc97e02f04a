/**
 * `quantize`: a float brick set → the same brick set with each brick in the format of its accelerator
 * (recipe + overrides), each brick compared with its float brick under ONNX Runtime, the whole set
 * compared end to end by greedy generation, all in `quant-report.json`; written atomically.
 */
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { writeDirAtomically } from '../formats/atomic-dir.js';
import { BRICKS_FILE, readBricksManifest, writeBricksManifest, type BricksManifest } from '../formats/bricks.js';
import { writeJsonAtomic } from '../formats/json-file.js';
import type { QuantizedBrickEntry, QuantizedManifest } from '../formats/quantized.js';
import { sha256File } from '../onnx/model-io.js';
import { describeBrick } from '../partition/brick-files.js';
import { brickDiskBytes, quantizeBrick, type WeightAlgorithm } from './brick.js';
import { acceleratorFor, parseFormat } from './format-spec.js';
import { agreement, endToEnd, loadEvalSet, runtimeGreedy, type EvalItem, type GreedyGenerator, type Prompt } from './greedy.js';
import { evalItemsFromQuestions, questionSetDir } from './eval-items.js';
import { EMBEDDED_CALIB_SET } from '../eval/embedded.js';
import { compareBrick, compareBricks, primaryOutput } from './metrics.js';
import type { AccuracyFigures } from '../formats/quantized.js';
import { planFormats } from './recipes.js';
import { REPORT_FILE, SWEEP_FILE, type AlgorithmComparison, type AlgorithmPick, type BrickReport, type QuantReport } from './report.js';
import { buildSamples, ENCODER_KINDS, type Sample } from './samples.js';
import type { CalibMethod } from './stats.js';
import { isSeq2SeqSet, runSeq2Seq, seq2seqMediaFiles, seq2seqMediaKind } from './seq2seq.js';
import { checkGrid, runSweep, type SweepGrid } from './sweep.js';

export interface QuantizeOptions {
  /** The float brick set (partition output). */
  readonly dir: string;
  readonly out: string;
  readonly recipe?: string;
  /** `{decoder: 'w4a16-g128'}`: by brick kind or brick name. */
  readonly overrides?: Readonly<Record<string, string>>;
  /**
   * Calibration inputs: a folder of images / WAVs (prepared by the model's own processor), a question set,
   * a .npy folder, or `builtin` (the embedded model's calibration questions); or a count of seeded random
   * samples (default 16), which w8a8 encoders refuse.
   */
  readonly calib?: number | string;
  readonly heldOut?: number;
  readonly seed?: number;
  /**
   * 4-bit weight algorithm. `auto` (default): both AWQ and round-to-nearest, and the brick keeps whichever
   * output is closer to the float brick's on the held-out inputs (not the calibration inputs AWQ searched
   * on); `awq` / `rtn` force one.
   */
  readonly algorithm?: WeightAlgorithm | 'auto';
  /** With a forced algorithm: also quantize 4-bit bricks with the other one and report both (default true). */
  readonly compareAlgorithms?: boolean;
  /** AWQ's α fixed instead of searched (an ablation; tests use it to make AWQ lose). */
  readonly awqAlpha?: number;
  readonly calibMethod?: CalibMethod;
  /** Symmetric blocks, no zero points (default true: llama.cpp Q4_0-compatible). */
  readonly symmetric?: boolean;
  /** MatMulNBits accuracy_level written into the bricks (default 4: int8 compute on CPU; 0 = exact float). */
  readonly accuracyLevel?: number;
  /** Compare every brick with its float brick (default true). */
  readonly evaluate?: boolean;
  /** Greedy tokens per prompt for the end-to-end comparison (default 8; 0 disables it). */
  readonly newTokens?: number;
  readonly evalSet?: string;
  readonly sweep?: boolean | SweepGrid;
  readonly generate?: GreedyGenerator;
  readonly threads?: number;
  readonly onStage?: (stage: string) => void;
}

export interface QuantizeResult {
  readonly out: string;
  readonly manifest: QuantizedManifest;
  readonly report: QuantReport;
}

const VERSION = 'nanomind 0.1.0';

export async function quantizeBricks(o: QuantizeOptions): Promise<QuantizeResult> {
  const t0 = performance.now();
  const dir = resolve(o.dir);
  const m = await readBricksManifest(dir);
  const already = m.bricks.filter((b) => (b as QuantizedBrickEntry).format && (b as QuantizedBrickEntry).format !== 'fp32');
  if (already.length) throw fail('E_QUANT_INPUT', `${dir}: brick(s) ${already.map((b) => `'${b.name}'`).join(', ')} are already quantized`,
    { hint: 'quantize the float brick set partition wrote' });
  // Encoder-decoder sets (Whisper, Florence-2) are calibrated and measured through the runtime's own
  // seq2seq generation on real clips / images (./seq2seq.ts); eval sets and sweeps assume a decoder-only chain.
  const seq2seq = isSeq2SeqSet(m);
  if (seq2seq && (o.evalSet || o.sweep))
    throw fail('E_QUANT_INPUT', `${dir}: --eval and --sweep are not available for encoder-decoder (cross-attention) brick sets`,
      { hint: 'quantize with --calib DIR (WAVs / images); the report gives per-brick figures and greedy token agreement' });
  const recipe = o.recipe ?? 'hybrid';
  const formats = planFormats(m.bricks, recipe, o.overrides);
  if (typeof o.sweep === 'object') checkGrid(m, o.sweep);
  const seed = o.seed ?? 1234;
  const calibDir = typeof o.calib === 'string' ? resolve(o.calib === 'builtin' ? EMBEDDED_CALIB_SET : o.calib) : undefined;
  const calibCount = typeof o.calib === 'number' ? o.calib : 16;
  const heldOutCount = o.heldOut ?? 4;
  const evaluate = o.evaluate ?? true;
  const symmetric = o.symmetric ?? true;
  const accuracyLevel = o.accuracyLevel ?? 4;
  const calibMethod = o.calibMethod ?? 'minmax';
  const auto = (o.algorithm ?? 'auto') === 'auto';
  const algorithm: WeightAlgorithm = auto ? 'awq' : o.algorithm as WeightAlgorithm;
  const specs = new Map([...formats].map(([k, v]) => [k, parseFormat(v)]));
  // Static int8 ranges of an encoder set from made-up pixels would calibrate the NPU on noise: only real inputs.
  const int8Encoders = m.bricks.filter((b) => ENCODER_KINDS.has(b.kind) && specs.get(b.name)!.kind === 'qdq');
  if (int8Encoders.length && !calibDir)
    throw fail('E_QUANT_CALIB', `${dir}: static int8 (w8a8) of ${int8Encoders.map((b) => `'${b.name}'`).join(', ')} needs real calibration inputs, and none were given`, {
      hint: '--calib DIR: a folder of images / WAVs (prepared by the model\'s own processor), a question set (eval.jsonl) or <input>.<k>.npy files; --calib builtin for the embedded model',
    });
  const needCalib = evaluate || [...specs.values()].some((s) => s.kind === 'qdq' || (s.kind === 'nbits' && s.bits === 4 && algorithm === 'awq'));
  if (seq2seq && needCalib && !calibDir) {
    const media = seq2seqMediaKind(m) === 'image' ? 'images' : 'WAV clips';
    throw fail('E_QUANT_CALIB', `${dir}: an encoder-decoder set is calibrated and measured on real ${media} through its own processor, and --calib gave none`, {
      hint: `--calib DIR: a folder of ${media}; or --no-eval --algo rtn for an unmeasured round-to-nearest set`,
    });
  }
  const newTokens = o.newTokens ?? 8;
  const notes: string[] = [];
  let heldSource: 'dir' | 'random' = 'random';

  const result = await writeDirAtomically(o.out, BRICKS_FILE, async (tmp) => {
    const scratch = join(tmp, '.scratch');
    await mkdir(scratch, { recursive: true });
    let calib: Sample[] = [], held: Sample[] = [];
    let heldFiles: string[] = [], floatSeq2Seq: number[][] = [];
    if (needCalib && seq2seq) {
      const files = await seq2seqMediaFiles(m, calibDir!);
      o.onStage?.(`calibration inputs (${files.length} ${seq2seqMediaKind(m)} file(s) through the float set's own generation)`);
      const fromDir = evaluate && files.length >= 2 ? Math.max(1, Math.min(heldOutCount, Math.floor(files.length / 4))) : 0;
      if (evaluate && !fromDir) notes.push('one calibration file: nothing held out, so no accuracy figures');
      const runs = await runSeq2Seq(dir, m, files, { maxNewTokens: Math.max(1, newTokens), record: true });
      const cut = files.length - fromDir;
      // a sample per brick run (the decoder's every step), split by file: no held-out step of a calibration file
      calib = runs.samples.slice(0, cut).flat();
      held = runs.samples.slice(cut).flat();
      notes.push(`encoder-decoder calibration: ${cut} file(s) calibrate, ${fromDir} held out; a brick's samples are its runs during greedy generation (${Math.max(1, newTokens)} tokens at most), the decoder's every step`);
      heldFiles = files.slice(cut);
      floatSeq2Seq = runs.tokens.slice(cut);
      heldSource = 'dir';
    } else if (needCalib) {
      o.onStage?.(`calibration inputs (${calibDir ?? `${calibCount} random`})`);
      const set = await buildSamples(dir, m, { count: calibDir ? Infinity : calibCount, seed, calibDir, threads: o.threads });
      calib = set.samples;
      for (const u of set.unfed) notes.push(`brick '${u.brick}' got no inputs (${u.why} comes only from the model's processor): not measured, and prompts hold no rows for it; give real inputs with --calib DIR`);
      // Held-out inputs come from the same source: the last quarter of a calibration directory (at most --held-out).
      const fromDir = calibDir && evaluate && calib.length >= 2 ? Math.max(1, Math.min(heldOutCount, Math.floor(calib.length / 4))) : 0;
      if (fromDir) { held = calib.slice(calib.length - fromDir); calib = calib.slice(0, calib.length - fromDir); }
      else if (evaluate) held = (await buildSamples(dir, m, { count: heldOutCount, seed: seed + 1, threads: o.threads })).samples;
      heldSource = fromDir ? 'dir' : 'random';
    }
    const feedsOf = (set: Sample[], brick: string) => set.map((s) => s.feeds.get(brick)!).filter(Boolean);

    const reports: BrickReport[] = [];
    const entries: QuantizedBrickEntry[] = [];
    for (const b of m.bricks) {
      const t = performance.now();
      const spec = specs.get(b.name)!;
      o.onStage?.(`${b.name} → ${spec.name}`);
      const job = {
        srcDir: dir, brick: b, format: spec, outDir: tmp, algorithm, symmetric, accuracyLevel, calibMethod,
        calib: feedsOf(calib, b.name), scratch, threads: o.threads, onProgress: o.onStage, awqAlpha: o.awqAlpha,
      };
      let r = await quantizeBrick(job);
      const output = primaryOutput(b);
      const heldFeeds = feedsOf(held, b.name);
      let algorithms: AlgorithmComparison[] | undefined;
      let pick: AlgorithmPick | undefined;
      let measured: AccuracyFigures[] | undefined; // [calibration, held-out] of the kept brick, when the pick measured them
      const fourBit = spec.kind === 'nbits' && spec.bits === 4 && calib.length > 0 && (r.rewritten.MatMulNBits ?? 0) > 0;
      if (evaluate && heldFeeds.length && fourBit && (auto || (o.compareAlgorithms ?? true))) {
        const other: WeightAlgorithm = r.algorithm === 'awq' ? 'rtn' : 'awq';
        o.onStage?.(`${auto ? 'pick' : 'compare'} ${b.name}: ${r.algorithm} or ${other} on ${heldFeeds.length} held-out input(s)`);
        const alt = join(scratch, `alt-${b.name}`);
        await mkdir(alt, { recursive: true });
        const ra = await quantizeBrick({ ...job, algorithm: other, outDir: alt, onProgress: undefined });
        // both candidates against the float brick in one pass; the kept one's figures are the brick's
        const [f0, f1] = await compareBricks(join(dir, b.file), [join(tmp, r.file), join(alt, ra.file)], output, [feedsOf(calib, b.name), heldFeeds], o.threads);
        const by = { [r.algorithm]: f0![1]!, [ra.algorithm]: f1![1]! } as Record<'awq' | 'rtn', AlgorithmComparison['heldOut']>;
        measured = f0!;
        algorithms = [{ algorithm: 'awq', heldOut: by.awq }, { algorithm: 'rtn', heldOut: by.rtn }];
        if (auto) {
          // Ties go to RTN: the same accuracy without depending on the calibration inputs.
          const picked: WeightAlgorithm = by.awq.cosine > by.rtn.cosine ? 'awq' : 'rtn';
          pick = { picked, metric: 'heldOut.cosine', awq: by.awq.cosine, rtn: by.rtn.cosine };
          if (picked !== r.algorithm) {
            for (const f of await readdir(alt)) await rename(join(alt, f), join(tmp, f));
            r = ra;
            measured = f1!;
          }
        }
        await rm(alt, { recursive: true, force: true });
      }
      const entry = await describeBrick(tmp, r.file, b.name, b.kind);
      let figures: [BrickReport['calibration'], BrickReport['heldOut']] = [null, null];
      // A brick no sample reached (an encoder with no real input) has no figures rather than a vacuous 1.0.
      if (evaluate && spec.kind !== 'fp32' && heldFeeds.length) {
        o.onStage?.(`evaluate ${b.name}`);
        const [c, h] = measured ?? await compareBrick(join(dir, b.file), join(tmp, r.file), output, [feedsOf(calib, b.name), heldFeeds], o.threads);
        figures = [c!.samples ? c! : null, h!];
      }
      const accelerator = spec.kind === 'fp32' ? 'any' as const : acceleratorFor(spec, b.kind);
      entries.push({
        ...entry, format: spec.name, ...(accelerator !== 'any' ? { accelerator } : {}),
        quantization: {
          algorithm: r.algorithm, ...(spec.kind === 'nbits' ? { symmetric, accuracyLevel } : {}),
          ...(job.calib.length && r.algorithm !== 'none' && r.algorithm !== 'cast' && r.algorithm !== 'rtn' ? { calibration: { source: calibDir ? 'dir' as const : 'random' as const, samples: job.calib.length, seed } } : {}),
          from: { file: b.file, sha256: b.sha256, bytes: await brickDiskBytes(dir, b) }, rewritten: r.rewritten,
        },
        accuracy: figures[0] && figures[1] ? { calibration: figures[0], heldOut: figures[1] } : null,
      });
      reports.push({
        name: b.name, kind: b.kind, format: spec.name, accelerator, file: r.file,
        bytesBefore: await brickDiskBytes(dir, b), bytesAfter: await brickDiskBytes(tmp, entry),
        cosine: figures[1]?.cosine ?? null, sqnrDb: figures[1]?.sqnrDb ?? null, maxAbsError: figures[1]?.maxAbsError ?? null, output,
        calibration: figures[0], heldOut: figures[1], algorithm: r.algorithm, rewritten: r.rewritten,
        ...(algorithms ? { algorithms } : {}), ...(pick ? { pick } : {}), ...(r.awq ? { awq: r.awq } : {}), ...(r.rknn ? { rknn: r.rknn } : {}),
        seconds: (performance.now() - t) / 1000, notes: r.notes,
      });
    }
    for (const f of m.files) await copyFile(join(dir, f.path), join(tmp, f.path));
    const manifest: QuantizedManifest = {
      ...m, bricks: entries, verify: null, createdBy: VERSION,
      quantization: { recipe, source: { dir, manifestSha256: await sha256File(join(dir, BRICKS_FILE)) }, report: REPORT_FILE },
    };
    await writeBricksManifest(tmp, manifest);

    let e2e: QuantReport['endToEnd'] = null;
    const canGenerate = m.bricks.some((b) => b.kind === 'decoder');
    const prompts = held.length && !seq2seq ? held.map((s) => promptOf(m, s)) : [];
    const evalSet = o.evalSet ? await loadEvalItems(dir, o.evalSet) : undefined;
    let floatTokens: Awaited<ReturnType<typeof endToEnd>>['floatTokens'] | undefined;
    if (seq2seq && evaluate && newTokens > 0 && heldFiles.length) {
      o.onStage?.('end to end (greedy, the runtime\'s encoder-decoder generation)');
      const q = await runSeq2Seq(tmp, manifest, heldFiles, { maxNewTokens: newTokens });
      e2e = {
        ...agreement(floatSeq2Seq, q.tokens), accuracy: null, floatAccuracy: null, evalTokenAgreement: null,
        prompts: heldFiles.length, newTokens, generator: 'runtime-seq2seq',
      };
    } else if (evaluate && canGenerate && newTokens > 0 && prompts.length) {
      o.onStage?.('end to end (greedy)');
      const r = await endToEnd({ float: { dir, manifest: m }, quant: { dir: tmp, manifest }, prompts, evalSet, newTokens, generate: o.generate });
      floatTokens = r.floatTokens;
      const { floatTokens: _, ...figures } = r;
      e2e = { ...figures, generator: o.generate ? 'custom' : 'ort-greedy-no-cache' };
    } else if (evaluate && !canGenerate) notes.push('no decoder brick: end-to-end agreement skipped');

    let sweep: QuantReport['sweep'];
    if (o.sweep) {
      o.onStage?.('sweep');
      sweep = await runSweep({
        dir, manifest: m, scratch: join(scratch, 'sweep'), grid: typeof o.sweep === 'object' ? o.sweep : undefined,
        calib: (b) => feedsOf(calib, b), held: (b) => feedsOf(held, b), prompts, newTokens, evalSet,
        job: { algorithm, symmetric, accuracyLevel, calibMethod, threads: o.threads }, floatTokens,
        generate: o.generate ?? runtimeGreedy, onStage: o.onStage,
      });
      await writeJsonAtomic(join(tmp, SWEEP_FILE), sweep);
    }
    await rm(scratch, { recursive: true, force: true });
    const report: QuantReport = {
      format: 'nanomind.quant-report', version: 1, source: dir, out: resolve(o.out), recipe,
      calibration: { source: calibDir ? 'dir' : 'random', ...(calibDir ? { dir: calibDir } : {}), samples: calib.length, heldOut: held.length, heldOutSource: heldSource, seed, method: calibMethod },
      settings: { algorithm: auto ? 'auto' : algorithm, symmetric, accuracyLevel },
      bricks: reports,
      totals: { bytesBefore: reports.reduce((a, r) => a + r.bytesBefore, 0), bytesAfter: reports.reduce((a, r) => a + r.bytesAfter, 0) },
      endToEnd: e2e, ...(sweep ? { sweep } : {}), seconds: (performance.now() - t0) / 1000, notes,
    };
    await writeJsonAtomic(join(tmp, REPORT_FILE), report);
    return { manifest, report };
  });
  return { out: resolve(o.out), ...result };
}

/**
 * `builtin` (the embedded model's questions) or a folder with eval.jsonl in `nanomind eval`'s format is
 * prepared by the runtime's own input pipeline; a .jsonl file holds token ids and .npy inputs.
 */
async function loadEvalItems(bricksDir: string, set: string): Promise<EvalItem[]> {
  const path = resolve(questionSetDir(set));
  if ((await stat(path).catch(() => undefined))?.isDirectory()) return evalItemsFromQuestions(bricksDir, path);
  return loadEvalSet(path);
}

/** A held-out sample as a generation prompt: its token ids and the raw inputs of the encoder bricks. */
export function promptOf(m: BricksManifest, s: Sample): Prompt {
  const media: Prompt['media'] & object = {};
  for (const b of m.bricks.filter((x) => ENCODER_KINDS.has(x.kind)))
    for (const i of b.inputs)
      if (!m.connections.some((c) => c.to === `${b.name}.${i.name}`)) (media as Record<string, unknown>)[i.name] = s.feeds.get(b.name)?.[i.name];
  return { inputIds: s.inputIds ?? [], media, ...(s.positions3 ? { positions3: s.positions3 } : {}), ...(s.packs ? { packs: s.packs } : {}) };
}
