/**
 * `partition`: a model (monolithic ONNX graph or onnx-community split folder) → a brick set directory
 * with one ONNX per brick and bricks.json, verified against the original with ONNX Runtime.
 */
import { basename, resolve } from 'node:path';
import { fail } from '../errors.js';
import { writeDirAtomically } from '../formats/atomic-dir.js';
import { BRICKS_FILE, BRICKS_FORMAT, BRICKS_VERSION, isReplaceRows, writeBricksManifest, type BricksManifest, type BrickEntry, type Connection, type FileEntry, type VerifyReport } from '../formats/bricks.js';
import { noKvCacheNotice } from '../formats/kv-cache.js';
import { extractModel } from '../onnx/extract.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { loadModel, type OnnxFile } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { adoptImageNewline, LLAVA_ONEVISION } from './image-newline.js';
import { copyAuxFiles, interfaceOf, sourceEntry, writeBrick } from './brick-files.js';
import { checkIntakeFiles } from './intake-files.js';
import { detectBricks, type CutOverrides } from './detect.js';
import { configDirs, readModelConfig, resolveModelLayout } from './model-input.js';
import { addKvCache } from './kv-rewrite.js';
import { adoptSplitLayout } from './split-layout.js';
import { adoptEncoderDecoder } from './encoder-decoder.js';
import { verifyBricks } from './verify.js';

export interface PartitionOptions {
  readonly input: string;
  readonly out: string;
  /** Default: on for monolithic input and for a split projector, off for adopted split files. */
  readonly verify?: boolean;
  readonly cuts?: CutOverrides;
  readonly dtype?: string;
  readonly splitProjector?: boolean;
  readonly tolerance?: number;
  /** Write weights of at least this many bytes to `<brick>.onnx_data` (default: as in the source; forced past 2 GB). */
  readonly externalData?: number;
  /** Rewrite a decoder cut from a monolithic graph without a KV cache to take past / return present key values (kv-rewrite.ts). */
  readonly addKvCache?: boolean;
  readonly onStage?: (stage: string) => void;
}

export interface PartitionResult {
  readonly out: string;
  readonly manifest: BricksManifest;
  readonly notes: readonly string[];
}

const VERSION = 'nanomind 0.1.0';

export async function partition(o: PartitionOptions): Promise<PartitionResult> {
  const input = resolve(o.input);
  const layout = await resolveModelLayout(o.input, o.dtype);
  const cfgDirs = configDirs(layout.root);
  const config = await readModelConfig(cfgDirs);
  const notes: string[] = [...layout.notices];

  const manifest = await writeDirAtomically(o.out, BRICKS_FILE, async (tmp) => {
    let bricks: BrickEntry[];
    let connections: Connection[];
    let sources: FileEntry[];
    let verify: VerifyReport | null = null;
    let original: OnnxFile | undefined;
    let originalOutputs: string[] | undefined;
    let rewritten = false;
    if (layout.form === 'encoder-decoder') {
      o.onStage?.('adopt');
      const adopted = await adoptEncoderDecoder(layout.pair, tmp);
      ({ bricks, connections } = adopted);
      notes.push(...adopted.notes);
      if (o.splitProjector || o.cuts?.projector) notes.push('--split-projector / --cut projector ignored: encoder-decoder files are adopted as they are');
      sources = await Promise.all(layout.pair.files.map((f) => sourceEntry(f.file)));
      if (o.verify) notes.push('adopted files are byte-identical copies; nothing to verify');
    } else if (layout.form === 'split') {
      o.onStage?.('adopt');
      const adopted = await adoptSplitLayout(layout.split, tmp, { splitProjector: o.splitProjector ?? false, tokenIds: config.tokenIds, cutProjector: o.cuts?.projector, externalData: o.externalData });
      ({ bricks, connections } = adopted);
      if (o.addKvCache) notes.push('--add-kv-cache ignored: split-layout files are adopted as they are');
      notes.push(...adopted.notes);
      sources = await Promise.all(layout.split.files.map((f) => sourceEntry(f.file)));
      if (adopted.cutFrom && (o.verify ?? true)) { original = adopted.cutFrom; originalOutputs = adopted.cutOutputs; }
      else if (o.verify) notes.push('adopted files are byte-identical copies; nothing to verify');
    } else {
      o.onStage?.('load');
      const src = await loadModel(layout.file);
      const g = new Graph(src.model.graph!);
      o.onStage?.('infer shapes');
      for (const [k, v] of inferTypes(g)) g.types.set(k, mergeTypes(g.types.get(k), v));
      o.onStage?.('detect bricks');
      const found = detectBricks(g, { cuts: o.cuts, splitProjector: o.splitProjector, tokenIds: config.tokenIds });
      notes.push(...found.notes);
      bricks = [];
      for (const cut of found.bricks) {
        o.onStage?.(`write ${cut.name}`);
        const { model } = extractModel(src.model, g, { graphName: cut.name, inputs: cut.inputs, outputs: cut.outputs });
        if (cut.kind === 'decoder' && o.addKvCache && !cut.inputs.some((i) => /^past_key_values/.test(i.name))) {
          const r = addKvCache(model);
          rewritten = true;
          notes.push(`--add-kv-cache: the decoder's ${r.layers} attention layers now take past_key_values.* and return present.*${r.positions === 'sliced' ? ' (in-graph position ids keep the last sequence_length rows)' : ''}`);
        }
        bricks.push(await writeBrick(tmp, cut.name, cut.kind, model, src, o.externalData));
      }
      connections = [...found.connections];
      sources = [await sourceEntry(src.file)];
      // A rewritten decoder is always checked: only verification shows the graph's mask allows a past.
      if (rewritten && o.verify === false) notes.push('--no-verify ignored: a decoder rewritten by --add-kv-cache is always verified');
      if ((o.verify ?? true) || rewritten) original = src;
    }
    const kv = noKvCacheNotice(bricks);
    if (kv) notes.push(kv);
    // Tokenizer and processor files are checked as the runtime reads them, before the (slow) verification.
    const files = await copyAuxFiles(cfgDirs, tmp);
    const vision = bricks.find((b) => b.kind === 'vision');
    const visionSource = layout.form === 'split' ? layout.split.files.find((f) => f.kind === 'vision')?.file : undefined;
    if (config.modelType === LLAVA_ONEVISION && vision && visionSource) {
      const last = bricks.find((b) => b.kind === 'projector') ?? vision;
      const nl = await adoptImageNewline(tmp, vision, last.outputs.map((x) => x.name), visionSource, [layout.root, ...cfgDirs]);
      files.push(...nl.files);
      notes.push(nl.note);
    }
    await checkIntakeFiles(tmp, new Set(bricks.map((b) => b.kind)));
    if (original) {
      o.onStage?.('verify');
      const io = interfaceOf(original.model);
      verify = await verifyBricks({
        original: { file: original.file, inputs: io.inputs, outputs: originalOutputs ? io.outputs.filter((x) => originalOutputs!.includes(x.name)) : io.outputs },
        dir: tmp, bricks, connections, tolerance: o.tolerance, vocabSize: config.vocabSize ?? vocabFromBricks(bricks, connections),
      });
      if (!verify.ok)
        throw fail('E_VERIFY_MISMATCH', `brick chain differs from the original: max relative difference ${verify.maxRelDiff.toExponential(2)} > tolerance ${verify.tolerance}`,
          { hint: 'the cut may be wrong; try --cut, or raise --tolerance if the difference is numerical noise', notes: verify.outputs.map((x) => `${x.name}: max abs ${x.maxAbsDiff}, rel ${x.maxRelDiff}`) });
    }
    const m: BricksManifest = {
      format: BRICKS_FORMAT, version: BRICKS_VERSION,
      model: { id: config.id ?? basename(layout.form === 'monolithic' ? layout.file : input).replace(/\.onnx$/, ''), layout: layout.form === 'monolithic' ? 'monolithic' : 'split', source: input },
      sources, bricks, connections, files, verify, createdBy: VERSION,
    };
    await writeBricksManifest(tmp, m);
    return m;
  });
  return { out: resolve(o.out), manifest, notes };
}

/** The vocabulary bound for random prompts: the smallest placeholder id keeps text ids below special tokens. */
function vocabFromBricks(bricks: readonly BrickEntry[], connections: readonly Connection[]): number {
  const ids = connections.filter(isReplaceRows).map((c) => c.merge.placeholderTokenId);
  const logits = bricks.find((b) => b.kind === 'decoder')?.outputs.find((x) => x.name === 'logits')?.shape;
  const vocab = logits && typeof logits[logits.length - 1] === 'number' ? logits[logits.length - 1] as number : 256;
  return ids.length ? Math.min(vocab, ...ids) : vocab;
}
