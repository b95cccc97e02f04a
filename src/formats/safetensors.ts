/**
 * The few safetensors operations nanomind needs: find one named tensor in a (possibly multi-GB) checkpoint
 * and read just its bytes, and write a small file holding a few float32 tensors.
 *
 * Format (huggingface/safetensors): 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON
 *   { "<name>": { "dtype": "F32" | "F16" | "BF16" | …, "shape": [..], "data_offsets": [begin, end] }, …,
 *     "__metadata__"?: { string: string } }
 * then the data block; offsets are relative to its start (8 + N), little-endian, row-major.
 * Only the header and the one tensor's byte range are read.
 */
import { open, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { bfloat16ToFloat, halfToFloat } from '../onnx/dtype.js';

export interface SafetensorsEntry {
  readonly file: string;
  /** The key in the header (e.g. `image_newline` or `model.image_newline`). */
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
}

/** A header larger than this is not a safetensors file (the format's own reader refuses 100 MB). */
const MAX_HEADER = 100 * 1024 * 1024;
const FLOAT_BYTES: Readonly<Record<string, number>> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

async function readHeader(file: string): Promise<{ header: Record<string, unknown>; dataStart: number; size: number }> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(8);
    if (size < 8 || (await fh.read(head, 0, 8, 0)).bytesRead !== 8) throw fail('E_SAFETENSORS', `${file}: shorter than a safetensors header`, { file });
    const n = Number(head.readBigUInt64LE(0));
    if (n > MAX_HEADER || 8 + n > size) throw fail('E_SAFETENSORS', `${file}: header length ${n} does not fit the file (${size} bytes)`, { file });
    const json = Buffer.alloc(n);
    await fh.read(json, 0, n, 8);
    let header: unknown;
    try { header = JSON.parse(json.toString('utf8')); } catch (e) { throw fail('E_SAFETENSORS', `${file}: header is not JSON (${(e as Error).message})`, { file }); }
    if (!header || typeof header !== 'object' || Array.isArray(header)) throw fail('E_SAFETENSORS', `${file}: header is not a JSON object`, { file });
    return { header: header as Record<string, unknown>, dataStart: 8 + n, size };
  } finally {
    await fh.close();
  }
}

/** The first tensor whose key `match` accepts, in the `*.safetensors` files of `dir` (sorted by name). */
export async function findSafetensor(dir: string, match: (name: string) => boolean): Promise<SafetensorsEntry | undefined> {
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.safetensors')).sort();
  for (const f of files) {
    const { header } = await readHeader(join(dir, f));
    const name = Object.keys(header).find((k) => k !== '__metadata__' && match(k));
    if (!name) continue;
    const e = header[name] as { dtype?: unknown; shape?: unknown };
    return { file: join(dir, f), name, dtype: String(e.dtype), shape: Array.isArray(e.shape) ? e.shape.map(Number) : [] };
  }
  return undefined;
}

/** One floating-point tensor of a safetensors file as float32 (F32, F16, BF16, F64). */
export async function readSafetensorFloat32(file: string, name: string): Promise<{ data: Float32Array; shape: number[] }> {
  const { header, dataStart, size } = await readHeader(file);
  const e = header[name] as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | undefined;
  if (!e) throw fail('E_SAFETENSORS', `${file}: no tensor '${name}'`, { file });
  const bytes = FLOAT_BYTES[String(e.dtype)];
  const shape = Array.isArray(e.shape) ? e.shape.map(Number) : [];
  const count = shape.reduce((a, b) => a * b, 1);
  const off = Array.isArray(e.data_offsets) ? e.data_offsets.map(Number) : [];
  if (!bytes) throw fail('E_SAFETENSORS', `${file}: tensor '${name}' is ${String(e.dtype)}, expected F32, F16, BF16 or F64`, { file });
  if (off.length !== 2 || off[1]! - off[0]! !== count * bytes || dataStart + off[1]! > size)
    throw fail('E_SAFETENSORS', `${file}: tensor '${name}' data_offsets ${JSON.stringify(e.data_offsets)} do not match its shape [${shape}] or the file`, { file });
  const raw = Buffer.alloc(count * bytes);
  const fh = await open(file, 'r');
  try { await fh.read(raw, 0, raw.length, dataStart + off[0]!); } finally { await fh.close(); }
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++)
    data[i] = bytes === 4 ? raw.readFloatLE(i * 4) : bytes === 8 ? raw.readDoubleLE(i * 8)
      : e.dtype === 'F16' ? halfToFloat(raw.readUInt16LE(i * 2)) : bfloat16ToFloat(raw.readUInt16LE(i * 2));
  return { data, shape };
}

/** Writes float32 tensors as one safetensors file (keys in the given order, 8-byte aligned header). */
export async function writeSafetensorsFloat32(file: string, tensors: Readonly<Record<string, { data: Float32Array; shape: readonly number[] }>>): Promise<void> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.length * 4] };
    offset += t.data.length * 4;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // the reference writer pads the header with spaces
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const body = Buffer.alloc(offset);
  let o = 0;
  for (const t of Object.values(tensors)) for (const v of t.data) { body.writeFloatLE(v, o); o += 4; }
  await writeFile(file, Buffer.concat([head, Buffer.from(json, 'utf8'), body]));
}
