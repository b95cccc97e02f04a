/**
 * `compile`: a brick set + a target profile → a bundle directory: every brick on its best accelerator
 * in its best format (placement), a schedule plan, the brick files, the target profile, tokenizer and
 * config files, and for NPU bricks the Rockchip artifacts. Passes, in order:
 *   analyze bricks → load target → place → plan → copy bricks → NPU lowering (last, target-specific) → manifest.
 */
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { FileEntry } from '../formats/bricks.js';
import { BRICKS_FILE } from '../formats/bricks.js';
import {
  BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION, PLAN_FILE, writeBundleManifest, writePlan, type BundleArtifact, type BundleBrick, type BundleManifest, type Plan,
} from '../formats/bundle.js';
import { writeDirAtomically } from '../formats/atomic-dir.js';
import { noKvCacheNotice } from '../formats/kv-cache.js';
import { writeJsonAtomic } from '../formats/json-file.js';
import { sha256File } from '../onnx/model-io.js';
import { analyzeBrickSet, type BrickSetInfo } from './analyze.js';
import { DEFAULT_WORKLOAD, type Workload } from './cost.js';
import { place, type Objective, type PlaceOverride, type PlacementResult } from './placement.js';
import { buildPlan } from './plan.js';
import { convertRkllmScript, convertRknnScript, probeRknnToolkit, runRknnConversion, writeRknnOnnx, type RknnBrick } from './rknn.js';
import { writeRealCalibration } from './rknn-calib.js';
import { EMBEDDED_CALIB_SET } from '../eval/embedded.js';
import { fail, isNanomindError } from '../errors.js';
import { liftDecoder, writeNative, type HfTextConfig } from './native/lift.js';
import { chooseNative, nativeBitsFor, type CompileEngine } from './native/choose.js';
import { loadTarget, val, type TargetProfile } from './targets.js';

export interface CompileOptions {
  readonly bricks: string;
  readonly target: string;
  readonly out: string;
  readonly objective?: Objective;
  readonly place?: readonly PlaceOverride[];
  readonly maxContext?: number;
  readonly workload?: Partial<Omit<Workload, 'maxContext'>>;
  /**
   * Images / WAVs that rknn-toolkit2 calibrates a float NPU brick's w8a8 conversion with, prepared by the
   * model's own processor. Without it float bricks go to the NPU in fp16 only.
   */
  readonly calib?: string;
  /** `auto` (default): convert with rknn-toolkit2 when it imports here; `skip`: only write the script. */
  readonly rknn?: 'auto' | 'skip';
  /**
   * 'auto' (default) and 'native': a CPU-placed Llama / Qwen decoder is also packed for the native kernels
   * (`<brick>.native.json` + `<brick>.nmq`, Q4 or Q8 block 32); the runtime prefers them and keeps the ONNX brick as
   * its fallback. A decoder the lift does not recognise stays on ORT with a note. 'ort': nothing is packed.
   * The rule and its measurements: ./native/choose.ts.
   */
  readonly engine?: CompileEngine;
  /** Bits of the native pack; default: the decoder's format (4-bit → Q4, else Q8). */
  readonly nativeBits?: 4 | 8;
  readonly onStage?: (stage: string) => void;
}

export interface CompileResult {
  readonly out: string;
  readonly manifest: BundleManifest;
  readonly plan: Plan;
  readonly placement: PlacementResult;
  readonly target: TargetProfile;
  /** The decoder packed for the native kernels; null when none was (see the notes for why). */
  readonly native: NativePack | null;
}

export interface NativePack {
  readonly brick: string;
  readonly bits: 4 | 8;
  /** 'flag': --native-bits; 'format': followed the decoder's format. */
  readonly bitsFrom: 'flag' | 'format';
  readonly format: string;
  /** Bytes of the .nmq weights file. */
  readonly bytes: number;
}

export const TARGET_COPY = 'target.json';
const VERSION = 'nanomind 0.1.0';

export async function compile(o: CompileOptions): Promise<CompileResult> {
  o.onStage?.('analyze bricks');
  const set = await analyzeBrickSet(resolve(o.bricks), { maxContext: o.maxContext });
  const target = await loadTarget(o.target);
  const w: Workload = { ...DEFAULT_WORKLOAD, ...o.workload, maxContext: set.maxContext };
  const hasVision = set.bricks.some((b) => b.entry.kind === 'vision');
  const workload: Workload = {
    ...w,
    images: hasVision ? w.images : 0,
    // The reference request is one chat turn with one media item, as `bench` and `plan --simulate`'s chat
    // scenario run it: the image when the model sees, the clip only for a model that only hears.
    audioClips: !set.bricks.some((b) => b.entry.kind === 'audio') ? 0 : o.workload?.audioClips ?? (hasVision ? 0 : w.audioClips),
  };
  for (const f of o.place ?? []) {
    const b = set.bricks.find((x) => x.entry.name === f.brick || x.entry.kind === f.brick);
    if (f.format === 'w8a8' && b && b.format !== 'w8a8' && !o.calib)
      throw fail('E_COMPILE_CALIB', `--place ${f.brick}=${f.accelerator}:w8a8: converting the ${b.format} brick '${b.entry.name}' to int8 needs real calibration inputs`,
        { hint: '--calib DIR (a few representative images / WAVs), or quantize it first: nanomind quantize --recipe npu-int8 --calib DIR' });
  }
  o.onStage?.('place');
  const placement = place(set, target, { objective: o.objective, overrides: o.place, workload, calibrated: !!o.calib });
  const plan = buildPlan(set, target, placement, workload);
  const rknnProbe = o.rknn === 'skip' ? { ok: false, reason: 'skipped (--no-rknn)' } : placement.bricks.some((p) => p.route === 'rknn') ? await probeRknnToolkit() : { ok: false };

  let native: NativePack | null = null;
  const manifest = await writeDirAtomically(o.out, BUNDLE_FILE, async (tmp) => {
    o.onStage?.('copy bricks');
    const kv = noKvCacheNotice(set.manifest.bricks);
    const notes: string[] = [...placement.notes, ...(kv ? [kv] : [])];
    const bricks: BundleBrick[] = [];
    const rknnBricks: RknnBrick[] = [];
    const files: FileEntry[] = [];
    for (const p of placement.bricks) {
      const b = set.bricks.find((x) => x.entry.name === p.brick)!;
      const dataFiles: FileEntry[] = [];
      await copyInto(set.dir, b.entry.file, tmp);
      for (const d of b.entry.dataFiles) dataFiles.push(await copyInto(set.dir, d, tmp));
      const artifacts: BundleArtifact[] = [];
      if (p.route === 'rknn') {
        o.onStage?.(`lower ${p.brick} for the NPU`);
        const acc = target.accelerators.find((a) => a.id === p.accelerator)!;
        const r = await writeRknnOnnx(set.dir, b, tmp, val(acc.maxOpset) ?? 19);
        artifacts.push({ kind: 'rknn-onnx', ...(await entry(tmp, r.file)), status: 'ready',
          ...(b.staticFrom ? { note: `static shapes ${r.inputs.map((i) => `${i.name} [${i.shape.join(', ')}]`).join(', ')}: dynamic dims fixed from ${b.staticFrom}` } : {}) });
        const quantize = p.format === 'w8a8' && b.format !== 'w8a8';
        // placement offers w8a8 for a float brick only with --calib
        const calib = quantize ? await writeRealCalibration(set.dir, b.entry, r.inputs, resolve(o.calib === 'builtin' ? EMBEDDED_CALIB_SET : o.calib!), tmp) : undefined;
        const dataset = calib?.list;
        for (const f of calib?.files ?? []) files.push(await entry(tmp, f));
        if (dataset) artifacts.push({ kind: 'calibration', ...(await entry(tmp, dataset)), status: 'ready', note: `${calib!.samples} file(s) of ${o.calib} prepared by the model's processor` });
        rknnBricks.push({ brick: p.brick, onnx: r.file, rknn: b.entry.file.replace(/\.onnx$/, '') + '.rknn', quantize, dataset, inputs: r.inputs });
      }
      if (p.route === 'rkllm') {
        const acc = target.accelerators.find((a) => a.id === p.accelerator)!;
        const script = `convert_rkllm_${p.brick}.py`;
        await writeFile(join(tmp, script), convertRkllmScript(target.name, p.brick, p.format, set.maxContext, val(acc.cores) ?? 1));
        artifacts.push({ kind: 'convert-script', ...(await entry(tmp, script)), status: 'ready' });
        // The path says where the converted file goes; the runtime uses it once it is there.
        artifacts.push({ kind: 'rkllm', path: `${p.brick}.rkllm`, status: 'needs-conversion', note: `RKLLM builds the ${p.format} decoder from the Hugging Face checkpoint: python3 ${script} <hf-model-dir> (x86-64 Linux with rkllm-toolkit), then place ${p.brick}.rkllm in the bundle` });
        notes.push(`${p.brick}: runs on the ${p.accelerator} through RKLLM (${p.format}); the .rkllm file still needs conversion: python3 ${script} <hf-model-dir>`);
      }
      bricks.push({
        name: p.brick, kind: b.entry.kind, file: b.entry.file, sha256: await sha256File(join(tmp, b.entry.file)), bytes: (await stat(join(tmp, b.entry.file))).size,
        dataFiles, inputs: b.entry.inputs, outputs: b.entry.outputs, accelerator: p.accelerator, backend: p.backend as BundleBrick['backend'],
        format: p.format, sourceFormat: p.sourceFormat, memory: placement.models.get(p.brick)!.memory, artifacts,
      });
    }
    const choice = chooseNative(o.engine ?? 'auto', bricks, o.nativeBits);
    if (!choice.lift && choice.note) notes.push(choice.note);
    if (choice.lift) {
      const dec = bricks.find((b) => b.name === choice.brick)!;
      o.onStage?.(`pack ${dec.name} for the native kernels`);
      try {
        const cfgRaw = await readFile(join(set.dir, 'config.json'), 'utf8').catch(() => '{}');
        const cfg = JSON.parse(cfgRaw) as { text_config?: HfTextConfig } & HfTextConfig;
        const lifted = await liftDecoder(join(tmp, dec.file), cfg.text_config ?? cfg, choice.bits);
        const bits = lifted.config.bits;
        const from = choice.bitsFrom === 'flag' ? '--native-bits' : `its format ${dec.format}${bits === 8 && nativeBitsFor(dec.format) === 4 ? ' (AWQ-scaled weights: Q4 would round them twice)' : ''}`;
        const written = await writeNative(tmp, dec.name, lifted);
        files.push(await entry(tmp, written.config), await entry(tmp, written.weights));
        native = { brick: dec.name, bits, bitsFrom: choice.bitsFrom, format: dec.format, bytes: lifted.weights.byteLength };
        notes.push(`${dec.name}: packed for the native kernels (Q${bits} block 32 from ${from}, ${(lifted.weights.byteLength / 1e6).toFixed(1)} MB); the runtime uses them when the kernels load, else ONNX Runtime (run --engine ort to compare)`);
      } catch (e) {
        if (!(isNanomindError(e) && e.code === 'E_NATIVE_LIFT')) throw e;
        notes.push(`${dec.name}: stays on ONNX Runtime (${o.engine === 'native' ? '--engine native' : 'engine auto'}: the native lift does not recognise it): ${e.message.replace(join(tmp, dec.file), dec.file)}`);
      }
    }
    if (rknnBricks.length) {
      await writeFile(join(tmp, 'convert_rknn.py'), convertRknnScript(target.name, rknnBricks));
      files.push(await entry(tmp, 'convert_rknn.py'));
      if (rknnProbe.ok) {
        o.onStage?.('rknn-toolkit2 conversion');
        await runRknnConversion(tmp);
      } else {
        notes.push(`NPU artifacts still need conversion: rknn-toolkit2 is not importable here (${rknnProbe.reason ?? 'python3 -c "import rknn.api" failed'}); on an x86-64 Linux machine with \`pip install rknn-toolkit2\`, run \`python3 convert_rknn.py\` in the bundle directory`);
      }
      for (const r of rknnBricks) {
        const b = bricks.find((x) => x.name === r.brick)!;
        (b.artifacts as BundleArtifact[]).push({ kind: 'convert-script', ...(await entry(tmp, 'convert_rknn.py')), status: 'ready' });
        (b.artifacts as BundleArtifact[]).push(rknnProbe.ok
          ? { kind: 'rknn', ...(await entry(tmp, r.rknn)), status: 'ready' }
          : { kind: 'rknn', status: 'needs-conversion', note: `python3 convert_rknn.py (rknn-toolkit2) writes ${r.rknn}; until then the runtime runs ${r.onnx.replace('.rknn.onnx', '.onnx')} with ORT` });
      }
    }
    for (const f of set.manifest.files) files.push(await copyInto(set.dir, f.path, tmp));
    files.push(await copyInto(set.dir, BRICKS_FILE, tmp));
    await writeJsonAtomic(join(tmp, TARGET_COPY), target);
    await writePlan(tmp, plan);
    const m: BundleManifest = {
      format: BUNDLE_FORMAT, version: BUNDLE_VERSION, createdBy: VERSION,
      model: { id: set.manifest.model.id, source: set.dir },
      target: { name: target.name, title: target.title, file: TARGET_COPY, sha256: await sha256File(join(tmp, TARGET_COPY)) },
      plan: { file: PLAN_FILE, sha256: await sha256File(join(tmp, PLAN_FILE)) },
      bricks, connections: set.manifest.connections, files, notes,
    };
    await writeBundleManifest(tmp, m);
    return m;
  });
  return { out: resolve(o.out), manifest, plan, placement, target, native };
}

async function copyInto(srcDir: string, rel: string, outDir: string): Promise<FileEntry> {
  await mkdir(dirname(join(outDir, rel)), { recursive: true });
  await copyFile(join(srcDir, rel), join(outDir, rel));
  return entry(outDir, rel);
}

async function entry(dir: string, rel: string): Promise<FileEntry> {
  return { path: rel, sha256: await sha256File(join(dir, rel)), bytes: (await stat(join(dir, rel))).size };
}

export type { BrickSetInfo };
