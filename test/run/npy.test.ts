import { describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readNpy, readNpyFile, writeNpy, writeNpyFile, type NpyArray, type NpyDtype,
} from '../../src/run/inputs/npy.js';
import { NanomindError } from '../../src/errors.js';

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/**
 * A .npy file assembled byte by byte the way numpy's format.py does: magic, version, header length
 * (uint16 LE for 1.0, uint32 LE for 2.0/3.0), the header dict padded with spaces and ended by '\n' so
 * the data starts on an `align` boundary, then the data.
 */
function npyBytes(header: string, data: Uint8Array, opts: { version?: number; align?: number; headerLen?: number } = {}): Uint8Array {
  const version = opts.version ?? 1;
  const prefix = version === 1 ? 10 : 12;
  const align = opts.align ?? 64;
  const padlen = align - ((prefix + header.length + 1) % align);
  const h = enc(header + ' '.repeat(padlen) + '\n');
  const out = new Uint8Array(prefix + h.length + data.length);
  out.set([0x93, ...enc('NUMPY'), version, 0]);
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, opts.headerLen ?? h.length, true);
  else dv.setUint32(8, opts.headerLen ?? h.length, true);
  out.set(h, prefix);
  out.set(data, prefix + h.length);
  return out;
}

function le(kind: 'f4' | 'f8' | 'i8', values: readonly number[], bigEndian = false): Uint8Array {
  const width = kind === 'f4' ? 4 : 8;
  const dv = new DataView(new ArrayBuffer(values.length * width));
  values.forEach((v, i) => {
    if (kind === 'f4') dv.setFloat32(i * 4, v, !bigEndian);
    else if (kind === 'f8') dv.setFloat64(i * 8, v, !bigEndian);
    else dv.setBigInt64(i * 8, BigInt(v), !bigEndian);
  });
  return new Uint8Array(dv.buffer);
}

function npyError(fn: () => unknown): NanomindError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NanomindError);
    return e as NanomindError;
  }
  throw new Error('expected a NanomindError');
}

const hdr = (descr: string, shape: string, fortran = 'False') =>
  `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;

describe('readNpy on hand-built numpy bytes', () => {
  it('parses a float32 (2, 3) array exactly as np.save writes it', () => {
    // np.save(f, np.arange(6, dtype='<f4').reshape(2, 3) * 0.5): numpy ≥ 1.23 also reserves 20 spaces
    // (21 digits minus the '2' of the first axis) so the shape can grow in place.
    const header = hdr('<f4', '(2, 3)') + ' '.repeat(20);
    const bytes = npyBytes(header, le('f4', [0, 0.5, 1, 1.5, 2, 2.5]));
    expect(bytes.length).toBe(128 + 24);
    expect(Array.from(bytes.subarray(0, 10))).toEqual([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0x76, 0]);
    expect(bytes[127]).toBe(0x0a);
    const a = readNpy(bytes, 'x.npy');
    expect(a.dtype).toBe('float32');
    expect(a.shape).toEqual([2, 3]);
    expect(a.data).toBeInstanceOf(Float32Array);
    expect(Array.from(a.data as Float32Array)).toEqual([0, 0.5, 1, 1.5, 2, 2.5]);
    // and the writer reproduces numpy's bytes exactly
    expect(writeNpy(a)).toEqual(bytes);
  });

  it('parses format 2.0 and 3.0 headers', () => {
    for (const version of [2, 3]) {
      const bytes = npyBytes(hdr('<i8', '(3,)') + ' '.repeat(20), le('i8', [-1, 0, 2 ** 40]), { version });
      const a = readNpy(bytes);
      expect(a).toMatchObject({ dtype: 'int64', shape: [3] });
      expect(Array.from(a.data as BigInt64Array)).toEqual([-1n, 0n, 2n ** 40n]);
      expect(writeNpy(a, { version: version as 2 | 3 })).toEqual(bytes);
    }
  });

  it('accepts scalars, empty arrays, 16-byte aligned headers, double quotes and Python 2 longs', () => {
    expect(readNpy(npyBytes(hdr('<f8', '()'), le('f8', [3.25])))).toMatchObject({ shape: [], data: new Float64Array([3.25]) });
    expect(readNpy(npyBytes(hdr('<f4', '(0, 4)'), new Uint8Array(0))).shape).toEqual([0, 4]);
    const old = npyBytes(hdr('<f4', '(2,)'), le('f4', [1, 2]), { align: 16 }); // numpy < 1.16
    expect(Array.from(readNpy(old).data as Float32Array)).toEqual([1, 2]);
    const py2 = npyBytes(`{"descr": "<f4", "fortran_order": False, "shape": (1L, 2L)}`, le('f4', [7, 8]));
    expect(readNpy(py2)).toMatchObject({ dtype: 'float32', shape: [1, 2] });
    const reordered = npyBytes(`{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}`, le('f4', [1, 2]));
    expect(readNpy(reordered).shape).toEqual([2]);
  });

  it('byte-swaps big-endian data', () => {
    expect(Array.from(readNpy(npyBytes(hdr('>f4', '(3,)'), le('f4', [1.5, -2, 1e-3], true))).data as Float32Array))
      .toEqual(Array.from(Float32Array.of(1.5, -2, 1e-3)));
    expect(Array.from(readNpy(npyBytes(hdr('>i8', '(2,)'), le('i8', [-5, 2 ** 33], true))).data as BigInt64Array))
      .toEqual([-5n, 2n ** 33n]);
    const f2 = readNpy(npyBytes(hdr('>f2', '(1,)'), Uint8Array.of(0x3c, 0x00))); // half 1.0 = 0x3c00
    expect(f2).toMatchObject({ dtype: 'float16', data: Uint16Array.of(0x3c00) });
    expect(readNpy(npyBytes(hdr('>u1', '(1,)'), Uint8Array.of(200))).data).toEqual(Uint8Array.of(200));
  });

  it('copies the data: works from an unaligned Node Buffer and never aliases or mutates it', () => {
    const file = npyBytes(hdr('>f4', '(2,)'), le('f4', [1, 2], true));
    const backing = Buffer.alloc(file.length + 1);
    backing.set(file, 1);
    const input = backing.subarray(1); // byteOffset 1: a Float32Array could not view it in place
    const before = Buffer.from(input);
    const a = readNpy(input);
    expect(Array.from(a.data as Float32Array)).toEqual([1, 2]);
    expect(a.data.buffer).not.toBe(backing.buffer);
    expect(Buffer.compare(input, before)).toBe(0);
  });
});

describe('round trip', () => {
  const cases: NpyArray[] = [
    { dtype: 'float32', shape: [2, 2], data: Float32Array.of(1.5, -0, NaN, Infinity) },
    { dtype: 'float16', shape: [3], data: Uint16Array.of(0x3c00, 0xfbff, 0x7e00) },
    { dtype: 'float64', shape: [2], data: Float64Array.of(Math.PI, -Number.MAX_VALUE) },
    { dtype: 'int64', shape: [2, 1], data: BigInt64Array.of(-(2n ** 63n), 2n ** 63n - 1n) },
    { dtype: 'int32', shape: [3], data: Int32Array.of(-(2 ** 31), 0, 2 ** 31 - 1) },
    { dtype: 'int16', shape: [2], data: Int16Array.of(-32768, 32767) },
    { dtype: 'int8', shape: [1, 1, 2], data: Int8Array.of(-128, 127) },
    { dtype: 'uint8', shape: [4], data: Uint8Array.of(0, 1, 128, 255) },
    { dtype: 'uint16', shape: [2], data: Uint16Array.of(0, 65535) },
    { dtype: 'uint32', shape: [2], data: Uint32Array.of(0, 2 ** 32 - 1) },
    { dtype: 'uint64', shape: [1], data: BigUint64Array.of(2n ** 64n - 1n) },
    { dtype: 'bool', shape: [3], data: Uint8Array.of(1, 0, 1) },
    { dtype: 'float32', shape: [], data: Float32Array.of(42) },
    { dtype: 'int64', shape: [0], data: new BigInt64Array(0) },
  ];
  it.each(cases.map((c) => [`${c.dtype} [${c.shape.join(', ')}]`, c] as const))('%s', (_name, c) => {
    for (const version of [undefined, 1, 2, 3] as const) {
      const bytes = writeNpy(c, { version });
      const headerEnd = bytes.indexOf(0x0a) + 1;
      expect(headerEnd % 64).toBe(0);
      const back = readNpy(bytes);
      expect(back.dtype).toBe(c.dtype);
      expect(back.shape).toEqual(c.shape);
      expect(back.data.constructor).toBe(c.data.constructor);
      expect(new Uint8Array(back.data.buffer, back.data.byteOffset, back.data.byteLength))
        .toEqual(new Uint8Array(c.data.buffer, c.data.byteOffset, c.data.byteLength));
    }
  });
  it('writes the numpy descr for each dtype', () => {
    const descr = (dtype: NpyDtype, data: NpyArray['data']) => {
      const b = writeNpy({ dtype, shape: [data.length], data });
      return /'descr': '([^']+)'/.exec(Buffer.from(b).toString('latin1'))![1];
    };
    expect(descr('float16', new Uint16Array(1))).toBe('<f2');
    expect(descr('int8', new Int8Array(1))).toBe('|i1');
    expect(descr('uint8', new Uint8Array(1))).toBe('|u1');
    expect(descr('bool', new Uint8Array(1))).toBe('|b1');
    expect(descr('uint64', new BigUint64Array(1))).toBe('<u8');
  });
  it('writes from a view into a larger buffer without the surrounding bytes', () => {
    const big = Float32Array.of(9, 1, 2, 9);
    const back = readNpy(writeNpy({ dtype: 'float32', shape: [2], data: big.subarray(1, 3) }));
    expect(Array.from(back.data as Float32Array)).toEqual([1, 2]);
  });
  it('reads and writes files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nanomind-npy-'));
    try {
      const path = join(dir, 'pixel_values.npy');
      await writeNpyFile(path, { dtype: 'float32', shape: [1, 3], data: Float32Array.of(1, 2, 3) });
      expect(await readNpyFile(path)).toMatchObject({ dtype: 'float32', shape: [1, 3], data: Float32Array.of(1, 2, 3) });
      const missing = await readNpyFile(join(dir, 'nope.npy')).catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(NanomindError);
      expect((missing as NanomindError).code).toBe('E_NPY_READ');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('corrupt input → E_NPY_INVALID naming the file', () => {
  const good = () => npyBytes(hdr('<f4', '(2,)'), le('f4', [1, 2]));
  const withBytes = (b: Uint8Array, i: number, v: number) => { const c = b.slice(); c[i] = v; return c; };
  const corrupt: [string, () => Uint8Array][] = [
    ['empty input', () => new Uint8Array(0)],
    ['bad magic', () => withBytes(good(), 1, 0x6e)],
    ['not npy at all', () => enc('PK\x03\x04 this is a zip file')],
    ['unknown major version', () => withBytes(good(), 6, 4)],
    ['unknown minor version', () => withBytes(good(), 7, 1)],
    ['truncated before the header length', () => good().subarray(0, 9)],
    ['truncated v2 header length', () => npyBytes(hdr('<f4', '(2,)'), le('f4', [1, 2]), { version: 2 }).subarray(0, 11)],
    ['truncated header', () => good().subarray(0, 40)],
    ['header length beyond the file', () => npyBytes(hdr('<f4', '(2,)'), le('f4', [1, 2]), { headerLen: 5000 })],
    ['header is not a dict', () => npyBytes(`[1, 2, 3]`, new Uint8Array(0))],
    ['header is garbage', () => npyBytes(`{'descr': <f4 ...`, new Uint8Array(0))],
    ['unterminated string', () => npyBytes(`{'descr': '<f4, 'shape': (2,)}`, new Uint8Array(8))],
    ['trailing text after the dict', () => npyBytes(hdr('<f4', '(2,)') + ' extra', le('f4', [1, 2]))],
    ['missing shape', () => npyBytes(`{'descr': '<f4', 'fortran_order': False}`, le('f4', [1, 2]))],
    ['unexpected key', () => npyBytes(`{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}`, le('f4', [1, 2]))],
    ['duplicate key', () => npyBytes(`{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}`, le('f4', [1, 2]))],
    ['shape not integers', () => npyBytes(hdr('<f4', "('a',)"), le('f4', [1, 2]))],
    ['fortran_order not a bool', () => npyBytes(hdr('<f4', '(2,)', "'no'"), le('f4', [1, 2]))],
    ['fortran_order True', () => npyBytes(hdr('<f4', '(2, 1)', 'True'), le('f4', [1, 2]))],
    ['invalid UTF-8 in a v3 header', () => {
      const b = npyBytes(hdr('<f4', '(2,)'), le('f4', [1, 2]), { version: 3 });
      b[14] = 0xff;
      return b;
    }],
    ['data shorter than the shape needs', () => npyBytes(hdr('<f4', '(3,)'), le('f4', [1, 2]))],
    ['data longer than the shape needs', () => npyBytes(hdr('<f4', '(1,)'), le('f4', [1, 2]))],
    ['complex dtype', () => npyBytes(hdr('<c8', '(1,)'), new Uint8Array(8))],
    ['object dtype', () => npyBytes(hdr('|O', '(1,)'), new Uint8Array(8))],
    ['unicode string dtype', () => npyBytes(hdr('<U4', '(1,)'), new Uint8Array(16))],
    ['structured dtype', () => npyBytes(`{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}`, new Uint8Array(4))],
    ['bfloat16-like unknown code', () => npyBytes(hdr('<V2', '(1,)'), new Uint8Array(2))],
    ['multi-byte dtype without byte order', () => npyBytes(hdr('|f4', '(1,)'), new Uint8Array(4))],
    ['bad byte-order character', () => npyBytes(hdr('!f4', '(1,)'), new Uint8Array(4))],
    ['absurd shape', () => npyBytes(hdr('<f8', '(4294967296, 4294967296)'), new Uint8Array(8))],
  ];
  it.each(corrupt)('%s', (_name, make) => {
    const err = npyError(() => readNpy(make(), 'inputs/bad.npy'));
    expect(err.code).toBe('E_NPY_INVALID');
    expect(err.detail.file).toBe('inputs/bad.npy');
    expect(err.message).toContain('inputs/bad.npy');
  });
  it('gives fortran_order arrays a hint', () => {
    expect(npyError(() => readNpy(npyBytes(hdr('<f4', '(1,)', 'True'), le('f4', [1])))).detail.hint).toBeTruthy();
  });
});

describe('writeNpy rejects arrays it cannot write', () => {
  const bad: [string, NpyArray][] = [
    ['wrong typed array', { dtype: 'float32', shape: [2], data: new Float64Array(2) as never }],
    ['bigint dtype with number data', { dtype: 'int64', shape: [2], data: new Int32Array(2) as never }],
    ['length mismatch', { dtype: 'int32', shape: [2, 2], data: new Int32Array(3) }],
    ['negative dimension', { dtype: 'int32', shape: [-1], data: new Int32Array(0) }],
    ['fractional dimension', { dtype: 'int32', shape: [1.5], data: new Int32Array(1) }],
    ['unknown dtype', { dtype: 'complex64' as NpyDtype, shape: [1], data: new Float32Array(2) }],
    ['prototype key as dtype', { dtype: 'constructor' as NpyDtype, shape: [1], data: new Float32Array(1) }],
  ];
  it.each(bad)('%s', (_name, a) => {
    expect(npyError(() => writeNpy(a)).code).toBe('E_NPY_INVALID');
  });
});
