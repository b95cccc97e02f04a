/**
 * `partition`: a model (monolithic ONNX graph or onnx-community split folder) → a brick set directory
 * with one ONNX per brick and bricks.json, verified against the original with ONNX Runtime.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { writeDirAtomically } from '../formats/atomic-dir.js';
import { BRICKS_FILE, BRICKS_FORMAT, BRICKS_VERSION, writeBricksManifest, type BricksManifest, type BrickEntry, type Connection, type FileEntry, type VerifyReport } from '../formats/bricks.js';
import { readJsonFile } from '../formats/json-file.js';
import { extractModel } from '../onnx/extract.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { loadModel, type OnnxFile } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { copyAuxFiles, interfaceOf, sourceEntry, writeBrick } from './brick-files.js';
import { detectBricks, type CutOverrides } from './detect.js';
import { adoptEncoderDecoder, findEncoderDecoderLayout } from './encoder-decoder.js';
import { adoptSplitLayout, findSplitLayout } from './split-layout.js';
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
  const st = await stat(input).catch(() => undefined);
  if (!st) throw fail('E_FILE_NOT_FOUND', `${o.input}: no such file or directory`, { file: input });
  const seq2seq = st.isDirectory() ? await findEncoderDecoderLayout(input, o.dtype) : undefined;
  const split = st.isDirectory() && !seq2seq ? await findSplitLayout(input, o.dtype) : undefined;
  const monolithicFile = st.isDirectory() ? (split || seq2seq ? undefined : await findMonolithic(input)) : input;
  const modelDir = st.isDirectory() ? input : dirname(input);
  const configDirs = [modelDir, dirname(modelDir)];
  const config = await readConfig(configDirs);
  const notes: string[] = [];

  const manifest = await writeDirAtomically(o.out, BRICKS_FILE, async (tmp) => {
    let bricks: BrickEntry[];
    let connections: Connection[];
    let sources: FileEntry[];
    let verify: VerifyReport | null = null;
    let original: OnnxFile | undefined;
    let originalOutputs: string[] | undefined;
    if (seq2seq) {
      o.onStage?.('adopt');
      const adopted = await adoptEncoderDecoder(seq2seq, tmp);
      ({ bricks, connections } = adopted);
      notes.push(...adopted.notes);
      sources = await Promise.all([seq2seq.encoder, seq2seq.decoder].map(sourceEntry));
      if (o.verify) notes.push('adopted files are byte-identical copies; nothing to verify');
    } else if (split) {
      o.onStage?.('adopt');
      const adopted = await adoptSplitLayout(split, tmp, { splitProjector: o.splitProjector ?? false, tokenIds: config.tokenIds, cutProjector: o.cuts?.projector, externalData: o.externalData });
      ({ bricks, connections } = adopted);
      notes.push(...adopted.notes);
      sources = await Promise.all(split.files.map((f) => sourceEntry(f.file)));
      if (adopted.cutFrom && (o.verify ?? true)) { original = adopted.cutFrom; originalOutputs = adopted.cutOutputs; }
      else if (o.verify) notes.push('adopted files are byte-identical copies; nothing to verify');
    } else {
      o.onStage?.('load');
      const src = await loadModel(monolithicFile!);
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
        bricks.push(await writeBrick(tmp, cut.name, cut.kind, model, src, o.externalData));
      }
      connections = [...found.connections];
      sources = [await sourceEntry(src.file)];
      if (o.verify ?? true) original = src;
    }
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
    const files = await copyAuxFiles(configDirs, tmp);
    const m: BricksManifest = {
      format: BRICKS_FORMAT, version: BRICKS_VERSION,
      model: { id: config.id ?? basename(split || seq2seq ? input : monolithicFile!).replace(/\.onnx$/, ''), layout: split || seq2seq ? 'split' : 'monolithic', source: input },
      sources, bricks, connections, files, verify, createdBy: VERSION,
    };
    await writeBricksManifest(tmp, m);
    return m;
  });
  return { out: resolve(o.out), manifest, notes };
}

async function findMonolithic(dir: string): Promise<string> {
  for (const d of [dir, join(dir, 'onnx')]) {
    const onnx = (await readdir(d).catch(() => [] as string[])).filter((f) => f.endsWith('.onnx'));
    if (onnx.length === 1) return join(d, onnx[0]);
    if (onnx.includes('model.onnx')) return join(d, 'model.onnx');
  }
  throw fail('E_PARTITION_INPUT', `${dir}: no model found (expected onnx/{vision_encoder,embed_tokens,decoder_model_merged}.onnx or a single .onnx file)`,
    { hint: 'pass the .onnx file itself' });
}

interface ModelConfig { id?: string; vocabSize?: number; tokenIds: { image?: number; audio?: number } }

async function readConfig(dirs: readonly string[]): Promise<ModelConfig> {
  for (const d of dirs) {
    const file = join(d, 'config.json');
    if (!(await stat(file).catch(() => undefined))) continue;
    const c = await readJsonFile(file, 'E_CONFIG_INVALID') as Record<string, any>;
    const num = (...vals: unknown[]) => vals.find((v) => typeof v === 'number') as number | undefined;
    return {
      id: typeof c._name_or_path === 'string' && c._name_or_path ? c._name_or_path : undefined,
      vocabSize: num(c.text_config?.vocab_size, c.vocab_size),
      tokenIds: { image: num(c.image_token_index, c.image_token_id), audio: num(c.audio_token_index, c.audio_token_id) },
    };
  }
  return { tokenIds: {} };
}

/** The vocabulary bound for random prompts: the smallest placeholder id keeps text ids below special tokens. */
function vocabFromBricks(bricks: readonly BrickEntry[], connections: readonly Connection[]): number {
  const ids = connections.filter((c) => c.merge).map((c) => c.merge!.placeholderTokenId);
  const logits = bricks.find((b) => b.kind === 'decoder')?.outputs.find((x) => x.name === 'logits')?.shape;
  const vocab = logits && typeof logits[logits.length - 1] === 'number' ? logits[logits.length - 1] as number : 256;
  return ids.length ? Math.min(vocab, ...ids) : vocab;
}
