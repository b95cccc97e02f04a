/**
 * numpy `.npy` reader and writer, so tensors can be fed to and dumped from bricks with Python tooling.
 *
 * Format (numpy/lib/format.py, NEP 1):
 *   bytes 0-5   magic  \x93NUMPY
 *   byte  6, 7  major, minor version: 1.0, 2.0 or 3.0
 *   then        header length: uint16 LE (v1) or uint32 LE (v2, v3)
 *   then        header: a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`,
 *               latin-1 (v1, v2) or UTF-8 (v3), padded with spaces and ended by '\n' so that the data
 *               starts on a 64-byte boundary (older numpy used 16; readers must not rely on it)
 *   then        the raw elements, C order, in the byte order the descr names
 *
 * Supported: the plain numeric dtypes below, little- or big-endian (big-endian is swapped on read).
 * Not supported, reported as E_NPY_INVALID: fortran_order True, structured / object / string / complex
 * dtypes. Data shorter or longer than the shape needs is an error: it means the header and data disagree.
 * The writer emits exactly what `np.save` writes (including numpy's spare header space for growth).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fail } from '../../errors.js';

export type NpyDtype =
  | 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'int16' | 'int8'
  | 'uint8' | 'uint16' | 'uint32' | 'uint64' | 'bool';

export interface NpyDataTypes {
  float32: Float32Array; float16: Uint16Array; float64: Float64Array; int64: BigInt64Array; int32: Int32Array;
  int16: Int16Array; int8: Int8Array; uint8: Uint8Array; uint16: Uint16Array; uint32: Uint32Array;
  uint64: BigUint64Array; bool: Uint8Array;
}

/** float16 data is the raw IEEE half bits; bool is one byte per element, 0 or 1. */
export type NpyData = NpyDataTypes[NpyDtype];

export interface NpyArray<D extends NpyDtype = NpyDtype> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: NpyDataTypes[D];
}

type Ctor = { new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): NpyData; BYTES_PER_ELEMENT: number };

/** numpy kind+size → our dtype; the descr is this code with a byte-order prefix. */
const DTYPES: Record<NpyDtype, { code: string; ctor: Ctor }> = {
  float32: { code: 'f4', ctor: Float32Array }, float16: { code: 'f2', ctor: Uint16Array },
  float64: { code: 'f8', ctor: Float64Array }, int64: { code: 'i8', ctor: BigInt64Array },
  int32: { code: 'i4', ctor: Int32Array }, int16: { code: 'i2', ctor: Int16Array }, int8: { code: 'i1', ctor: Int8Array },
  uint8: { code: 'u1', ctor: Uint8Array }, uint16: { code: 'u2', ctor: Uint16Array },
  uint32: { code: 'u4', ctor: Uint32Array }, uint64: { code: 'u8', ctor: BigUint64Array }, bool: { code: 'b1', ctor: Uint8Array },
};
const BY_CODE = new Map(Object.entries(DTYPES).map(([name, d]) => [d.code, name as NpyDtype]));

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const ALIGN = 64;
const GROWTH_AXIS_MAX_DIGITS = 21; // numpy leaves room for the first axis to grow to 21 digits in place

// Typed arrays use the platform's byte order; .npy data in '<' order can be viewed directly only here.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function readNpy(bytes: Uint8Array, name = '<npy>'): NpyArray {
  const bad = (why: string, hint?: string) =>
    fail('E_NPY_INVALID', `${name}: ${why}`, { file: name, ...(hint ? { hint } : {}) });

  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw bad('not a .npy file (bad magic)');
  const major = bytes[6]!, minor = bytes[7]!;
  if (![1, 2, 3].includes(major) || minor !== 0) throw bad(`unsupported .npy format version ${major}.${minor}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lenBytes = major === 1 ? 2 : 4;
  if (bytes.length < 8 + lenBytes) throw bad('truncated header length');
  const headerLen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const dataStart = 8 + lenBytes + headerLen;
  if (dataStart > bytes.length) throw bad(`truncated header: needs ${headerLen} bytes, file has ${bytes.length - 8 - lenBytes}`);
  const raw = bytes.subarray(8 + lenBytes, dataStart);
  let text = '';
  let dict: Map<string, HeaderValue>;
  try {
    const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    text = major === 3 ? new TextDecoder('utf-8', { fatal: true }).decode(raw) : buf.toString('latin1');
    dict = parseHeader(text);
  } catch (e) {
    throw bad(`bad header ${JSON.stringify(text.trim())}: ${(e as Error).message}`);
  }
  const keys = [...dict.keys()].sort().join(',');
  if (keys !== 'descr,fortran_order,shape') throw bad(`header keys must be descr, fortran_order, shape; got ${keys}`);
  const descr = dict.get('descr'), fortran = dict.get('fortran_order'), rawShape = dict.get('shape');
  if (typeof descr !== 'string') throw bad(`unsupported dtype ${JSON.stringify(descr)} (structured arrays are not supported)`);
  if (typeof fortran !== 'boolean') throw bad('fortran_order must be True or False');
  if (!isIntTuple(rawShape)) throw bad('shape must be a tuple of integers');
  const shape = rawShape;
  if (fortran) throw bad('fortran_order arrays are not supported', 'save a C-order array: np.save(f, np.ascontiguousarray(a))');

  const order = descr[0], dtype = BY_CODE.get(descr.slice(1));
  if (dtype === undefined || descr.length !== 3 || !'<>|='.includes(order!))
    throw bad(`unsupported dtype '${descr}'`, `supported: ${[...BY_CODE.keys()].join(' ')} with < > | byte order`);
  const { ctor } = DTYPES[dtype];
  const width = ctor.BYTES_PER_ELEMENT;
  if (order === '|' && width > 1) throw bad(`dtype '${descr}' needs a byte order`);

  const count = shape.reduce((a, d) => a * d, 1);
  if (!Number.isSafeInteger(count * width)) throw bad(`shape ${pyShape(shape)} is too large`);
  const have = bytes.length - dataStart;
  if (have !== count * width)
    throw bad(`data is ${have} bytes, shape ${pyShape(shape)} of ${dtype} needs ${count * width}`);

  // Copy into a fresh buffer: this aligns the data for the typed array whatever `bytes.byteOffset` is,
  // and never aliases the caller's bytes (a Node Buffer's slice() would, and we may swap in place).
  const copy = new Uint8Array(have);
  copy.set(bytes.subarray(dataStart));
  const bigEndian = order === '>' || (order === '=' && !LITTLE_ENDIAN);
  if (width > 1 && bigEndian === LITTLE_ENDIAN) swapBytes(copy, width);
  return { dtype, shape, data: new ctor(copy.buffer, 0, count) };
}

export function writeNpy(a: NpyArray, opts: { version?: 1 | 2 | 3 } = {}): Uint8Array {
  const bad = (why: string) => fail('E_NPY_INVALID', `cannot write .npy: ${why}`);
  if (!Object.hasOwn(DTYPES, a.dtype)) throw bad(`unsupported dtype '${a.dtype}'`);
  const info = DTYPES[a.dtype];
  if (!a.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`bad shape [${a.shape.join(', ')}]`);
  if (!(a.data instanceof info.ctor)) throw bad(`${a.dtype} data must be a ${info.ctor.name}, got ${a.data?.constructor?.name}`);
  const count = a.shape.reduce((x, d) => x * d, 1);
  if (a.data.length !== count) throw bad(`shape [${a.shape.join(', ')}] has ${count} elements, data has ${a.data.length}`);
  const width = info.ctor.BYTES_PER_ELEMENT;
  const descr = `${width === 1 ? '|' : '<'}${info.code}`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${pyShape(a.shape)}, }`;
  if (a.shape.length > 0) header += ' '.repeat(GROWTH_AXIS_MAX_DIGITS - String(a.shape[0]).length);

  const hlen = header.length + 1; // + '\n'
  const version = opts.version ?? (10 + hlen + ALIGN > 0xffff ? 2 : 1);
  const prefix = version === 1 ? 10 : 12;
  const padlen = ALIGN - ((prefix + hlen) % ALIGN); // numpy pads 1..64 spaces, never 0
  if (version === 1 && hlen + padlen > 0xffff) throw bad('header too long for format 1.0');
  const headerBytes = new TextEncoder().encode(header + ' '.repeat(padlen) + '\n'); // ASCII: same in latin-1 and UTF-8

  const out = new Uint8Array(prefix + headerBytes.length + count * width);
  out.set(MAGIC, 0);
  out[6] = version;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, headerBytes.length, true);
  else dv.setUint32(8, headerBytes.length, true);
  out.set(headerBytes, prefix);
  const data = new Uint8Array(a.data.buffer, a.data.byteOffset, count * width);
  out.set(data, prefix + headerBytes.length);
  if (!LITTLE_ENDIAN && width > 1) swapBytes(out.subarray(prefix + headerBytes.length), width);
  return out;
}

export async function readNpyFile(path: string): Promise<NpyArray> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw fail('E_NPY_READ', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path }, e);
  }
  return readNpy(bytes, path);
}

export async function writeNpyFile(path: string, a: NpyArray, opts?: { version?: 1 | 2 | 3 }): Promise<void> {
  await writeFile(path, writeNpy(a, opts));
}

/** Python's repr of a shape tuple: `()`, `(3,)`, `(2, 3)`. */
const pyShape = (shape: readonly number[]): string =>
  shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;

function swapBytes(b: Uint8Array, width: number): void {
  for (let i = 0; i < b.length; i += width) b.subarray(i, i + width).reverse();
}

type HeaderValue = string | boolean | number | HeaderValue[];

const isIntTuple = (v: HeaderValue | undefined): v is number[] =>
  Array.isArray(v) && v.every((d) => typeof d === 'number');

/**
 * Parses the header's Python literal. Only what numpy writes is accepted: a dict of quoted keys to
 * strings, True/False, and tuples/lists (shape ints may carry Python 2's `L` suffix).
 */
function parseHeader(src: string): Map<string, HeaderValue> {
  let i = 0;
  const ws = () => { while (i < src.length && /\s/.test(src[i]!)) i++; };
  const expect = (c: string) => {
    ws();
    if (src[i] !== c) throw new Error(`expected '${c}' at ${i}`);
    i++;
  };
  const str = (): string => {
    const q = src[i++];
    const end = src.indexOf(q!, i);
    if (end < 0) throw new Error('unterminated string');
    const s = src.slice(i, end);
    i = end + 1;
    return s;
  };
  const value = (): HeaderValue => {
    ws();
    const c = src[i];
    if (c === "'" || c === '"') return str();
    if (src.startsWith('True', i)) { i += 4; return true; }
    if (src.startsWith('False', i)) { i += 5; return false; }
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      i++;
      const items: HeaderValue[] = [];
      for (ws(); src[i] !== close; ws()) {
        const m = /^(\d+)L?/.exec(src.slice(i));
        if (m) { items.push(Number(m[1])); i += m[0].length; } else items.push(value());
        ws();
        if (src[i] === ',') i++;
        else if (src[i] !== close) throw new Error(`expected ',' or '${close}' at ${i}`);
      }
      i++;
      if (items.some((x) => typeof x === 'number' && !Number.isSafeInteger(x))) throw new Error('dimension too large');
      return items;
    }
    throw new Error(`unexpected ${c === undefined ? 'end' : `'${c}'`} at ${i}`);
  };
  const dict = new Map<string, HeaderValue>();
  expect('{');
  for (ws(); src[i] !== '}'; ws()) {
    if (src[i] !== "'" && src[i] !== '"') throw new Error(`expected a quoted key at ${i}`);
    const k = str();
    if (dict.has(k)) throw new Error(`duplicate key '${k}'`);
    expect(':');
    dict.set(k, value());
    ws();
    if (src[i] === ',') i++;
    else if (src[i] !== '}') throw new Error(`expected ',' or '}' at ${i}`);
  }
  i++;
  ws();
  if (i !== src.length) throw new Error(`trailing text at ${i}`);
  return dict;
}
