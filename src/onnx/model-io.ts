/**
 * ModelProto IO: lossless load/save (onnx-buf, ONNX 1.20 schema; unknown fields survive a round trip),
 * external data (read lazily, written with page-aligned offsets), and the checks that keep hostile
 * files from escaping the model directory or reading past a data file.
 *
 * External data follows the ONNX convention: `external_data` entries `location` (relative to the
 * model file's directory), `offset` and `length` (decimal strings), `data_location = EXTERNAL`.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProto_AttributeType as AT, ModelProtoSchema, StringStringEntryProtoSchema,
  TensorProto_DataLocation, type GraphProto, type ModelProto, type TensorProto,
} from 'onnx-buf';
import { fail } from '../errors.js';
import { realInside, resolveInside } from '../util/files.js';

export { resolveInside, sha256File } from '../util/files.js';
import { checkModel } from './check.js';
import { DT, dtypeName, storageBytes } from './dtype.js';

export interface OnnxFile {
  readonly model: ModelProto;
  /** Absolute path of the .onnx file. */
  readonly file: string;
  /** Directory that external-data locations are relative to. */
  readonly dir: string;
}

export interface ExternalRef { readonly location: string; readonly offset: number; readonly length: number }

/** protobuf refuses single messages over 2 GiB; beyond this, weights must go to external data. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;
const PAGE = 4096;
const COPY_CHUNK = 16 << 20;

export function parseModel(bytes: Uint8Array, file: string): ModelProto {
  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, bytes);
  } catch (e) {
    throw fail('E_ONNX_PARSE', `${file}: not a valid ONNX model (${(e as Error).message})`,
      { file, hint: 'the file may be truncated or not an ONNX protobuf' }, e);
  }
  // Protobuf decodes many random byte strings without complaint; a real model has a graph and an IR version.
  if (!model.graph || model.irVersion <= 0n || model.opsetImport.length === 0)
    throw fail('E_ONNX_PARSE', `${file}: not a valid ONNX model (no graph, IR version or opset import)`,
      { file, hint: 'the file may be truncated or not an ONNX protobuf' });
  checkModel(model, file);
  return model;
}

export async function loadModel(file: string, opts: { checkExternal?: boolean } = {}): Promise<OnnxFile> {
  const abs = resolve(file);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(abs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw fail('E_FILE_NOT_FOUND', `${file}: ${code === 'ENOENT' ? 'no such file' : `cannot read (${code})`}`, { file }, e);
  }
  const loaded: OnnxFile = { model: parseModel(bytes, file), file: abs, dir: dirname(abs) };
  if (opts.checkExternal !== false) await checkExternalData(loaded);
  return loaded;
}

export function externalRef(t: TensorProto): ExternalRef | undefined {
  if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL && t.externalData.length === 0) return undefined;
  const kv = new Map(t.externalData.map((e) => [e.key, e.value]));
  const location = kv.get('location');
  if (!location) throw fail('E_ONNX_EXTERNAL', `tensor '${t.name}': external data without a location`);
  const num = (k: string, dflt: number): number => {
    const v = kv.get(k);
    if (v === undefined) return dflt;
    if (!/^\d+$/.test(v)) throw fail('E_ONNX_EXTERNAL', `tensor '${t.name}': external data ${k} '${v}' is not a non-negative integer`);
    return Number(v);
  };
  return { location, offset: num('offset', 0), length: num('length', -1) };
}


/** Every TensorProto in a graph, its subgraphs and Constant attributes, with the owning graph's name. */
export function* allTensors(g: GraphProto): Generator<TensorProto> {
  yield* g.initializer;
  for (const n of g.node)
    for (const a of n.attribute) {
      if (a.t) yield a.t;
      yield* a.tensors;
      if (a.g) yield* allTensors(a.g);
      for (const sg of a.graphs) yield* allTensors(sg);
    }
}

export function tensorElementCount(t: TensorProto): number {
  return t.dims.reduce((n, d) => n * Number(d), 1);
}

/** Validates every external reference: inside the directory, file present, range within the file. */
export async function checkExternalData(m: OnnxFile): Promise<void> {
  const sizes = new Map<string, number>();
  for (const t of allTensors(m.model.graph!)) {
    const ref = externalRef(t);
    if (!ref) continue;
    const what = `${m.file}: tensor '${t.name}'`;
    const path = resolveInside(m.dir, ref.location, what);
    let size = sizes.get(path);
    if (size === undefined) {
      try {
        size = (await stat(path)).size;
      } catch {
        throw fail('E_ONNX_EXTERNAL', `${what}: external data file '${ref.location}' is missing`,
          { file: path, hint: `copy ${basename(ref.location)} next to ${basename(m.file)}` });
      }
      await realInside(m.dir, path, what);
      sizes.set(path, size);
    }
    const need = t.dataType === DT.STRING ? -1 : storageBytes(t.dataType, tensorElementCount(t));
    const length = ref.length < 0 ? size - ref.offset : ref.length;
    if (ref.offset + length > size || (need >= 0 && length !== need))
      throw fail('E_ONNX_EXTERNAL',
        `${what}: external data offset ${ref.offset} + length ${length} does not fit '${ref.location}' (${size} bytes) or the tensor (${need} bytes)`,
        { file: path });
  }
}

/** Raw little-endian bytes of a tensor, reading external data on demand. */
export async function tensorBytes(t: TensorProto, dir: string): Promise<Uint8Array<ArrayBuffer>> {
  const ref = externalRef(t);
  if (ref) {
    const path = resolveInside(dir, ref.location, `tensor '${t.name}'`);
    const length = ref.length >= 0 ? ref.length : storageBytes(t.dataType, tensorElementCount(t));
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.allocUnsafeSlow(length);
      const { bytesRead } = await fh.read(buf, 0, length, ref.offset);
      if (bytesRead !== length) throw fail('E_ONNX_EXTERNAL', `tensor '${t.name}': '${ref.location}' ended early`);
      return new Uint8Array(buf.buffer as ArrayBuffer, buf.byteOffset, length);
    } finally {
      await fh.close();
    }
  }
  return inlineBytes(t);
}

/** Bytes of an inline tensor, converting the typed `*_data` fields to the raw layout when used. */
export function inlineBytes(t: TensorProto): Uint8Array<ArrayBuffer> {
  if (t.rawData.length > 0 || tensorElementCount(t) === 0) return t.rawData;
  const n = tensorElementCount(t);
  const out = new Uint8Array(storageBytes(t.dataType, n));
  const dv = new DataView(out.buffer);
  switch (t.dataType) {
    case DT.FLOAT: t.floatData.forEach((v, i) => dv.setFloat32(i * 4, v, true)); break;
    case DT.COMPLEX64: t.floatData.forEach((v, i) => dv.setFloat32(i * 4, v, true)); break;
    case DT.DOUBLE: case DT.COMPLEX128: t.doubleData.forEach((v, i) => dv.setFloat64(i * 8, v, true)); break;
    case DT.INT64: t.int64Data.forEach((v, i) => dv.setBigInt64(i * 8, v, true)); break;
    case DT.UINT64: t.uint64Data.forEach((v, i) => dv.setBigUint64(i * 8, v, true)); break;
    case DT.UINT32: t.uint64Data.forEach((v, i) => dv.setUint32(i * 4, Number(v), true)); break;
    case DT.INT32: t.int32Data.forEach((v, i) => dv.setInt32(i * 4, v, true)); break;
    case DT.INT16: case DT.UINT16: case DT.FLOAT16: case DT.BFLOAT16:
      t.int32Data.forEach((v, i) => dv.setUint16(i * 2, v & 0xffff, true)); break;
    case DT.INT4: case DT.UINT4: case DT.FLOAT4E2M1: case DT.INT2: case DT.UINT2:
      // Packed types keep whole bytes per int32 entry (already packed).
      t.int32Data.forEach((v, i) => { if (i < out.length) out[i] = v & 0xff; }); break;
    case DT.STRING: throw fail('E_ONNX_DTYPE', `tensor '${t.name}': string tensors have no raw bytes`);
    default: t.int32Data.forEach((v, i) => { out[i] = v & 0xff; });
  }
  return out;
}

export interface SaveOptions {
  /** Directory that the source model's external locations are relative to. */
  readonly sourceDir?: string;
  /**
   * Tensors of at least this many bytes go to `<name>.onnx_data`. `undefined` keeps external tensors
   * external and inline ones inline; either way the model is forced to external data past 2 GiB.
   */
  readonly externalThreshold?: number;
  /** Data file name; defaults to the model file name + `_data`. */
  readonly dataFile?: string;
  /** Inline bytes past which external data becomes mandatory (protobuf's 2 GiB less headroom; lowered in tests). */
  readonly inlineLimit?: number;
}

export interface SavedModel { readonly file: string; readonly dataFile?: string; readonly bytes: number; readonly dataBytes: number }

/**
 * Writes a model atomically: the data file and the proto go to temp names and are renamed into place
 * last. Source tensors are never modified; external tensors are streamed in chunks, so memory holds at
 * most one chunk of weights beyond what the proto itself holds.
 */
export async function saveModel(model: ModelProto, file: string, opts: SaveOptions = {}): Promise<SavedModel> {
  const abs = resolve(file);
  const dataName = opts.dataFile ?? `${basename(abs)}_data`;
  const dataPath = join(dirname(abs), dataName);
  const tmpTag = `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const sourceDir = opts.sourceDir ?? dirname(abs);

  const tensors = [...allTensors(model.graph!)].filter((t) => t.dataType !== DT.STRING);
  const sizeOf = (t: TensorProto): number => storageBytes(t.dataType, tensorElementCount(t));
  const externalUnder = (threshold: number | undefined) => (t: TensorProto): boolean =>
    threshold === undefined ? externalRef(t) !== undefined : sizeOf(t) >= threshold && sizeOf(t) > 0;
  // protobuf cannot hold more than 2 GiB: past that every tensor of 1 KiB or more goes external.
  const inlineTotal = tensors.filter((t) => !externalUnder(opts.externalThreshold)(t)).reduce((n, t) => n + sizeOf(t), 0);
  const goesExternal = externalUnder(inlineTotal > (opts.inlineLimit ?? PROTOBUF_LIMIT - (64 << 20)) ? 1024 : opts.externalThreshold);

  // Shallow replacements: the caller's tensors stay untouched.
  const replaced = new Map<TensorProto, TensorProto>();
  let dataBytes = 0;
  const dataTmp = dataPath + tmpTag;
  const externals = tensors.filter(goesExternal);
  try {
    if (externals.length) {
      const out = await open(dataTmp, 'w');
      try {
        for (const t of externals) {
          const offset = Math.ceil(dataBytes / PAGE) * PAGE;
          const length = await copyTensorData(t, sourceDir, out, offset);
          dataBytes = offset + length;
          replaced.set(t, {
            ...t, rawData: new Uint8Array(0), floatData: [], int32Data: [], int64Data: [], doubleData: [], uint64Data: [],
            dataLocation: TensorProto_DataLocation.EXTERNAL,
            externalData: [['location', dataName], ['offset', String(offset)], ['length', String(length)]]
              .map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
          });
        }
      } finally {
        await out.close();
      }
    }
    for (const t of tensors)
      if (!replaced.has(t) && externalRef(t)) {
        // Drop data_location entirely (not DEFAULT): an inline tensor then encodes exactly as before it went external.
        const inline: TensorProto = { ...t, rawData: await tensorBytes(t, sourceDir), externalData: [] };
        delete (inline as Partial<TensorProto>).dataLocation;
        replaced.set(t, inline);
      }

    const bytes = toBinary(ModelProtoSchema, withTensors(model, replaced));
    if (bytes.length > PROTOBUF_LIMIT)
      throw fail('E_ONNX_TOO_LARGE', `${file}: model is ${bytes.length} bytes, over protobuf's 2 GiB limit`,
        { hint: 'save with external data (--external-data)' });
    await writeFile(abs + tmpTag, bytes);
    if (externals.length) await rename(dataTmp, dataPath);
    await rename(abs + tmpTag, abs);
    return { file: abs, dataFile: externals.length ? dataPath : undefined, bytes: bytes.length, dataBytes };
  } catch (e) {
    await rm(dataTmp, { force: true });
    await rm(abs + tmpTag, { force: true });
    throw e;
  }
}

async function copyTensorData(t: TensorProto, sourceDir: string, out: import('node:fs/promises').FileHandle, at: number): Promise<number> {
  const ref = externalRef(t);
  if (!ref) {
    const bytes = inlineBytes(t);
    await out.write(bytes, 0, bytes.length, at);
    return bytes.length;
  }
  const path = resolveInside(sourceDir, ref.location, `tensor '${t.name}'`);
  const length = ref.length >= 0 ? ref.length : storageBytes(t.dataType, tensorElementCount(t));
  const src = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(length, 1)));
    for (let done = 0; done < length;) {
      const n = Math.min(buf.length, length - done);
      const { bytesRead } = await src.read(buf, 0, n, ref.offset + done);
      if (bytesRead !== n) throw fail('E_ONNX_EXTERNAL', `tensor '${t.name}' (${dtypeName(t.dataType)}): '${ref.location}' ended early`);
      await out.write(buf, 0, n, at + done);
      done += n;
    }
  } finally {
    await src.close();
  }
  return length;
}

/** A copy of the model's message tree in which the given tensors are swapped; untouched parts are shared. */
function withTensors(model: ModelProto, swap: ReadonlyMap<TensorProto, TensorProto>): ModelProto {
  if (swap.size === 0) return model;
  const mapGraph = (g: GraphProto): GraphProto => ({
    ...g,
    initializer: g.initializer.map((t) => swap.get(t) ?? t),
    node: g.node.map((n) => n.attribute.some((a) => a.type === AT.TENSOR || a.type === AT.TENSORS || a.g || a.graphs.length)
      ? { ...n, attribute: n.attribute.map((a) => ({
          ...a,
          t: a.t && (swap.get(a.t) ?? a.t),
          tensors: a.tensors.map((t) => swap.get(t) ?? t),
          g: a.g && mapGraph(a.g),
          graphs: a.graphs.map(mapGraph),
        })) }
      : n),
  });
  return { ...model, graph: mapGraph(model.graph!) };
}
