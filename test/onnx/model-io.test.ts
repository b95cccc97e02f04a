import { mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  DeviceConfigurationProtoSchema, ModelProtoSchema, StringStringEntryProtoSchema, TensorProto_DataLocation,
  type ModelProto,
} from 'onnx-buf';
import ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, makeTensor } from '../../src/onnx/builder.js';
import { DT, floatToHalf, halfToFloat, storageBytes } from '../../src/onnx/dtype.js';
import { externalRef, inlineBytes, loadModel, parseModel, saveModel, tensorBytes } from '../../src/onnx/model-io.js';
import { code } from '../error-codes.js';

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'nanomind-io-')); });

const rng = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;

/** x[1,8] → MatMul(W[8,16]) → Add(b) → y, with weights big enough to externalize. */
function linearModel(out = 16): { model: ModelProto; w: Float32Array; b: Float32Array } {
  const r = rng(7);
  const w = Float32Array.from({ length: 8 * out }, r);
  const b = Float32Array.from({ length: out }, r);
  const g = new GraphBuilder('linear');
  const x = g.input('x', 'float32', ['batch', 8]);
  const y = g.op('Add', [g.op('MatMul', [x, g.init('weight', [8, out], w)]), g.init('bias', [out], b)], {}, { outputs: ['y'] });
  g.output(y, 'float32', ['batch', out]);
  return { model: g.model(), w, b };
}

async function runLinear(file: string): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(file);
  const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from({ length: 8 }, (_, i) => i - 3), [1, 8]) });
  await s.release();
  return out.y.data as Float32Array;
}

describe('lossless round trip', () => {
  it('re-encodes a model byte for byte, including fields newer than ONNX 1.10 and unknown fields', async () => {
    const { model } = linearModel();
    // ONNX ≥ 1.16 fields: node and graph metadata_props, tensor metadata_props, model device_configurations (1.18).
    model.graph!.node[0].metadataProps.push(create(StringStringEntryProtoSchema, { key: 'origin', value: 'layer0' }));
    model.graph!.metadataProps.push(create(StringStringEntryProtoSchema, { key: 'scope', value: '/language_model' }));
    model.graph!.initializer[0].metadataProps.push(create(StringStringEntryProtoSchema, { key: 'quant', value: 'none' }));
    model.configuration.push(create(DeviceConfigurationProtoSchema, { name: 'npu', numDevices: 3, device: ['core0', 'core1', 'core2'] }));
    const known = toBinary(ModelProtoSchema, model);
    // A field from a future schema (number 999, varint 42) must survive too.
    const bytes = new Uint8Array([...known, 0xb8, 0x3e, 42]);
    const file = join(dir, 'newer.onnx');
    await writeFile(file, bytes);

    const loaded = await loadModel(file);
    await saveModel(loaded.model, join(dir, 'newer-copy.onnx'));
    const again = await readFile(join(dir, 'newer-copy.onnx'));
    expect(Buffer.compare(again, Buffer.from(bytes))).toBe(0);
    const reparsed = parseModel(again, 'newer-copy.onnx');
    expect(reparsed.graph!.node[0].metadataProps[0].value).toBe('layer0');
    expect(reparsed.configuration[0].device).toEqual(['core0', 'core1', 'core2']);
    expect(equals(ModelProtoSchema, reparsed, loaded.model)).toBe(true);
  });

  it('keeps every ONNX element type, packed int4/uint4 and float8 included', async () => {
    const g = new GraphBuilder('dtypes');
    const types: [string, number, number][] = [
      ['float16', DT.FLOAT16, 5], ['bfloat16', DT.BFLOAT16, 5], ['int4', DT.INT4, 7], ['uint4', DT.UINT4, 7],
      ['float8e4m3fn', DT.FLOAT8E4M3FN, 6], ['float8e5m2', DT.FLOAT8E5M2, 6], ['int8', DT.INT8, 4], ['float64', DT.DOUBLE, 3],
      ['uint64', DT.UINT64, 2], ['float4e2m1', DT.FLOAT4E2M1, 3],
    ];
    for (const [name, dt, n] of types) {
      const raw = Uint8Array.from({ length: storageBytes(dt, n) }, (_, i) => (i * 37 + dt) & 0xff);
      g.initializers.push(makeTensor(`t_${name}`, [n], raw, name as never));
    }
    const x = g.input('x', 'float32', [1]);
    g.output(g.op('Identity', [x]), 'float32', [1]);
    const file = join(dir, 'dtypes.onnx');
    await saveModel(g.model(), file);
    const loaded = await loadModel(file);
    for (const [name, dt, n] of types) {
      const t = loaded.model.graph!.initializer.find((i) => i.name === `t_${name}`)!;
      expect(t.dataType).toBe(dt);
      expect(inlineBytes(t).length).toBe(storageBytes(dt, n));
      expect(Array.from(inlineBytes(t))).toEqual(Array.from({ length: storageBytes(dt, n) }, (_, i) => (i * 37 + dt) & 0xff));
    }
    // int4 packs two per byte, rounding up.
    expect(storageBytes(DT.INT4, 7)).toBe(4);
  });

  it('converts typed *_data fields to raw little-endian bytes', () => {
    const t = makeTensor('f', [3], new Float32Array(0));
    t.rawData = new Uint8Array(0);
    t.floatData = [1.5, -2, 3.25];
    expect(Array.from(new Float32Array(inlineBytes(t).buffer))).toEqual([1.5, -2, 3.25]);
    const h = makeTensor('h', [2], new Uint16Array(0), 'float16');
    h.rawData = new Uint8Array(0);
    h.int32Data = [floatToHalf(0.5), floatToHalf(-65504)];
    const bits = new Uint16Array(inlineBytes(h).buffer);
    expect([halfToFloat(bits[0]), halfToFloat(bits[1])]).toEqual([0.5, -65504]);
  });
});

describe('external data', () => {
  it('writes weights to .onnx_data with page-aligned offsets, reads them lazily, and ORT gives the same result', async () => {
    const { model, w } = linearModel();
    const inline = join(dir, 'inline.onnx');
    const ext = join(dir, 'ext.onnx');
    await saveModel(model, inline);
    const saved = await saveModel(model, ext, { externalThreshold: 64 });
    expect(saved.dataFile).toBe(join(dir, 'ext.onnx_data'));
    const loaded = await loadModel(ext);
    const weight = loaded.model.graph!.initializer.find((t) => t.name === 'weight')!;
    const ref = externalRef(weight)!;
    expect(weight.dataLocation).toBe(TensorProto_DataLocation.EXTERNAL);
    expect(ref.location).toBe('ext.onnx_data');
    expect(ref.offset % 4096).toBe(0);
    expect(weight.rawData.length).toBe(0);
    const back = await tensorBytes(weight, loaded.dir);
    expect(Array.from(new Float32Array(back.buffer, back.byteOffset, back.length / 4))).toEqual(Array.from(w));
    expect((await stat(ext)).size).toBeLessThan(1024);
    expect(Array.from(await runLinear(ext))).toEqual(Array.from(await runLinear(inline)));

    // external → inline again restores the original bytes
    await saveModel(loaded.model, join(dir, 'inline-again.onnx'), { sourceDir: loaded.dir, externalThreshold: Infinity });
    expect(Buffer.compare(await readFile(join(dir, 'inline-again.onnx')), await readFile(inline))).toBe(0);
  });

  it('forces external data when the inline weights would pass the protobuf limit', async () => {
    const { model } = linearModel(64);
    await saveModel(model, join(dir, 'forced-inline.onnx'));
    const saved = await saveModel(model, join(dir, 'forced.onnx'), { externalThreshold: Infinity, inlineLimit: 1024 });
    expect(saved.dataFile).toBe(join(dir, 'forced.onnx_data'));
    const loaded = await loadModel(join(dir, 'forced.onnx'));
    expect(externalRef(loaded.model.graph!.initializer.find((t) => t.name === 'weight')!)).toBeDefined();
    // the 256-byte bias stays inline: only tensors of 1 KiB or more move
    expect(externalRef(loaded.model.graph!.initializer.find((t) => t.name === 'bias')!)).toBeUndefined();
    expect(Array.from(await runLinear(join(dir, 'forced.onnx')))).toEqual(Array.from(await runLinear(join(dir, 'forced-inline.onnx'))));
  });

  it('copies external data of a model saved elsewhere, leaving the source untouched', async () => {
    const loaded = await loadModel(join(dir, 'ext.onnx'));
    const before = await readFile(join(dir, 'ext.onnx_data'));
    const sub = await mkdtemp(join(tmpdir(), 'nanomind-io-copy-'));
    await saveModel(loaded.model, join(sub, 'copy.onnx'), { sourceDir: loaded.dir });
    expect(await readdir(sub)).toEqual(['copy.onnx', 'copy.onnx_data']);
    expect(Array.from(await runLinear(join(sub, 'copy.onnx')))).toEqual(Array.from(await runLinear(join(dir, 'ext.onnx'))));
    expect(Buffer.compare(await readFile(join(dir, 'ext.onnx_data')), before)).toBe(0);
    expect(externalRef(loaded.model.graph!.initializer[0])!.location).toBe('ext.onnx_data');
  });
});

describe('hostile input', () => {

  async function withExternal(name: string, edit: (entries: Map<string, string>) => void): Promise<string> {
    const loaded = await loadModel(join(dir, 'ext.onnx'));
    const m = fromBinary(ModelProtoSchema, toBinary(ModelProtoSchema, loaded.model));
    const t = m.graph!.initializer.find((i) => i.name === 'weight')!;
    const kv = new Map(t.externalData.map((e) => [e.key, e.value]));
    edit(kv);
    t.externalData = [...kv].map(([key, value]) => create(StringStringEntryProtoSchema, { key, value }));
    const file = join(dir, `${name}.onnx`);
    await writeFile(file, toBinary(ModelProtoSchema, m));
    return file;
  }

  it('rejects a missing file, a truncated model and garbage', async () => {
    expect(await code(loadModel(join(dir, 'nope.onnx')))).toBe('E_FILE_NOT_FOUND');
    const good = await readFile(join(dir, 'inline.onnx'));
    await writeFile(join(dir, 'truncated.onnx'), good.subarray(0, Math.floor(good.length * 0.6)));
    expect(await code(loadModel(join(dir, 'truncated.onnx')))).toBe('E_ONNX_PARSE');
    await writeFile(join(dir, 'garbage.onnx'), Buffer.from('this is not a protobuf at all, just some text\n'.repeat(20)));
    expect(await code(loadModel(join(dir, 'garbage.onnx')))).toBe('E_ONNX_PARSE');
    await writeFile(join(dir, 'empty.onnx'), new Uint8Array(0));
    expect(await code(loadModel(join(dir, 'empty.onnx')))).toBe('E_ONNX_PARSE');
  });

  it('rejects external data that is missing, out of range, or escapes the model directory', async () => {
    expect(await code(loadModel(await withExternal('missing', (kv) => kv.set('location', 'gone.onnx_data'))))).toBe('E_ONNX_EXTERNAL');
    expect(await code(loadModel(await withExternal('range', (kv) => kv.set('offset', '1000000'))))).toBe('E_ONNX_EXTERNAL');
    expect(await code(loadModel(await withExternal('length', (kv) => kv.set('length', '12'))))).toBe('E_ONNX_EXTERNAL');
    expect(await code(loadModel(await withExternal('negative', (kv) => kv.set('offset', '-5'))))).toBe('E_ONNX_EXTERNAL');
    expect(await code(loadModel(await withExternal('escape', (kv) => kv.set('location', '../../etc/passwd'))))).toBe('E_PATH_ESCAPE');
    expect(await code(loadModel(await withExternal('absolute', (kv) => kv.set('location', '/etc/passwd'))))).toBe('E_PATH_ESCAPE');
  });

  it('a failed save leaves no file behind', async () => {
    const loaded = await loadModel(join(dir, 'ext.onnx'));
    const sub = await mkdtemp(join(tmpdir(), 'nanomind-io-fail-'));
    // The source directory is wrong, so the external weights cannot be copied.
    expect(await code(saveModel(loaded.model, join(sub, 'x.onnx'), { sourceDir: sub }))).not.toBe('resolved');
    expect(await readdir(sub)).toEqual([]);
  });
});
