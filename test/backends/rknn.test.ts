/**
 * The RKNN binding against a contract double of librknnrt.so (test/backends/doubles/rknn-double.c, compiled
 * here with the system cc). Contract-tested, not NPU-tested: no Rockchip board is reachable from CI.
 *
 * Oracles: the C compiler's sizeof/offsetof for the header's structs (the double logs them), the double's
 * known computation y = 2x + 1 quantized to int8 (zp −3, scale 0.05) against a float64 computation here,
 * and the call log the double writes (sequence, struct fields as C reads them, core mask, memory ids).
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrickEntry } from '../../src/formats/bricks.js';
import { rknnBackend } from '../../src/run/backends/rknn-backend.js';
import { coreMaskValue, loadRknn, RKNN_ERRORS, RKNN_STRUCT_SIZES, RknnModel } from '../../src/run/backends/rknn.js';
import { code, codeOf } from '../error-codes.js';
import { buildDouble, type Double } from './doubles/build.js';

let d: Double;
const MODEL = Buffer.from('RKNNDBL1 a converted vision brick');
const x = Float32Array.from({ length: 12 }, (_, i) => i / 10 - 0.5);
/** float64 oracle: y = 2x + 1 through int8 affine quantization (zp −3, scale 0.05) and back. */
const expected = Array.from(x, (v) => (Math.max(-128, Math.min(127, Math.round((2 * v + 1) / 0.05) - 3)) + 3) * 0.05);

beforeAll(async () => {
  d = await buildDouble('rknn');
  process.env.RKNN_DOUBLE_LOG = d.log;
});
afterAll(async () => { delete process.env.RKNN_DOUBLE_LOG; if (d) await rm(d.dir, { recursive: true, force: true }); });

describe('rknn binding (contract double of librknnrt.so)', () => {
  it('declares the structs with the sizes and offsets C gives them', async () => {
    RknnModel.open(MODEL, 'sizes', { library: d.lib, zeroCopy: false }).close();
    const sizes = (await d.lines()).find((l) => l.startsWith('sizes '))!;
    expect(sizes).toContain(`attr=${RKNN_STRUCT_SIZES.rknn_tensor_attr} num=${RKNN_STRUCT_SIZES.rknn_input_output_num} mem=${RKNN_STRUCT_SIZES.rknn_tensor_mem} `
      + `input=${RKNN_STRUCT_SIZES.rknn_input} output=${RKNN_STRUCT_SIZES.rknn_output} sdk=${RKNN_STRUCT_SIZES.rknn_sdk_version}`);
    // LP64 values of the v2.x header, so a wrong double cannot agree with a wrong binding.
    expect(RKNN_STRUCT_SIZES).toEqual({ rknn_tensor_attr: 376, rknn_input_output_num: 8, rknn_tensor_mem: 40, rknn_input: 32, rknn_output: 24, rknn_sdk_version: 512 });
  });

  it('zero-copy: init, queries, core mask from the plan, create_mem + set_io_mem, run, int8 dequantization, memory freed before destroy', async () => {
    const before = (await d.lines()).length;
    const m = RknnModel.open(MODEL, 'vision.rknn', { library: d.lib, coreMask: '0_1_2' });
    expect(m.inputs[0]).toMatchObject({ name: 'pixel_values', dims: [1, 2, 2, 3], format: 'NHWC', quantized: true, elements: 12 });
    expect(m.outputs[0]).toMatchObject({ name: 'image_features', dims: [1, 12], quantized: true, zeroPoint: -3 });
    expect(m.sdk).toEqual({ api: '2.3.2 (double)', driver: '0.9.8 (double)' });
    for (let k = 0; k < 2; k++) {
      const [y] = m.run([x]);
      Array.from(y!).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    }
    m.close();
    m.close();
    const calls = (await d.lines()).slice(before).filter((l) => !l.startsWith('sizes '));
    expect(calls).toEqual([
      `rknn_init size=${MODEL.length} flag=0 extend=null magic=ok`,
      'rknn_query ctx=ok cmd=0 size=8 index=0',
      'rknn_query ctx=ok cmd=1 size=376 index=0',
      'rknn_query ctx=ok cmd=2 size=376 index=0',
      'rknn_query ctx=ok cmd=5 size=512 index=0',
      'rknn_set_core_mask ctx=ok mask=7',
      'rknn_create_mem size=24 -> mem0',
      // The input as we write it: float16 (type 1), NCHW (fmt 0), converted by the runtime (pass_through 0).
      'rknn_set_io_mem ctx=ok mem0 name=pixel_values index=0 type=1 fmt=0 pass_through=0 qnt=2 zp=0 scale=0.020 mem.size=24',
      'rknn_create_mem size=12 -> mem1',
      // The output in the model's native int8 affine type, dequantized by the binding.
      'rknn_set_io_mem ctx=ok mem1 name=image_features index=0 type=2 fmt=3 pass_through=0 qnt=2 zp=-3 scale=0.050 mem.size=12',
      'rknn_run ctx=ok extend=null',
      'rknn_run ctx=ok extend=null',
      'rknn_destroy_mem ctx=ok mem0',
      'rknn_destroy_mem ctx=ok mem1',
      'rknn_destroy ctx=ok open_mems=0',
    ]);
    expect(() => m.run([x])).toThrow(expect.objectContaining({ code: 'E_BRICK_CLOSED' }));
  });

  it('copying I/O: rknn_inputs_set (float32) and rknn_outputs_get into a preallocated int8 buffer, then release', async () => {
    const before = (await d.lines()).length;
    const m = RknnModel.open(MODEL, 'vision.rknn', { library: d.lib, zeroCopy: false, coreMask: '0' });
    const [y] = m.run([x]);
    Array.from(y!).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    m.close();
    const calls = (await d.lines()).slice(before).filter((l) => !l.startsWith('sizes ') && !l.startsWith('rknn_query'));
    expect(calls).toEqual([
      `rknn_init size=${MODEL.length} flag=0 extend=null magic=ok`,
      'rknn_set_core_mask ctx=ok mask=1',
      'rknn_inputs_set ctx=ok n=1 index=0 size=48 pass_through=0 type=0 fmt=0',
      'rknn_run ctx=ok extend=null',
      'rknn_outputs_get ctx=ok n=1 want_float=0 is_prealloc=1 index=0 size=12',
      'rknn_outputs_release ctx=ok n=1',
      'rknn_destroy ctx=ok open_mems=0',
    ]);
  });

  it('maps every RKNN error code to E_RKNN_RUNTIME naming it, and checks inputs before calling the runtime', async () => {
    for (const rc of [-1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13]) {
      process.env.RKNN_DOUBLE_INIT_RC = String(rc);
      try {
        RknnModel.open(MODEL, 'bad.rknn', { library: d.lib });
        expect.unreachable();
      } catch (e) {
        expect((e as { code: string }).code).toBe('E_RKNN_RUNTIME');
        expect((e as Error).message).toContain(RKNN_ERRORS[rc]!.split(':')[0]!);
      }
    }
    delete process.env.RKNN_DOUBLE_INIT_RC;
    expect(codeOf(() => RknnModel.open(Buffer.from('not a model'), 'bad.rknn', { library: d.lib }))).toBe('E_RKNN_RUNTIME');
    const m = RknnModel.open(MODEL, 'vision.rknn', { library: d.lib });
    expect(codeOf(() => m.run([new Float32Array(5)]))).toBe('E_BRICK_FEEDS');
    m.close();
    expect(codeOf(() => coreMaskValue('0_7'))).toBe('E_BAD_OPTION');
    expect([coreMaskValue('auto'), coreMaskValue('0'), coreMaskValue('0_1'), coreMaskValue('0_1_2'), coreMaskValue('all')]).toEqual([0, 1, 3, 7, 0xffff]);
  });

  it('the rknn backend runs a brick’s .rknn artifact behind the BrickSession contract, with the plan’s core mask', async () => {
    process.env.NANOMIND_RKNN_LIB = d.lib;
    try {
      expect(await rknnBackend.probe()).toEqual({ ok: true });
      await writeFile(join(d.dir, 'vision.rknn'), MODEL);
      const entry = { name: 'vision', kind: 'vision', file: 'vision.onnx', dataFiles: [], sha256: '', params: 0, bytes: 0, nodes: 0,
        inputs: [{ name: 'pixel_values', dtype: 'float32', shape: ['batch_size', 3, 2, 2] }],
        outputs: [{ name: 'image_features', dtype: 'float32', shape: ['batch_size', 12] }] } as unknown as BrickEntry;
      expect(await code(rknnBackend.open(entry, d.dir))).toBe('E_BRICK_OPEN');
      const before = (await d.lines()).length;
      const s = await rknnBackend.open(entry, d.dir, { artifact: 'vision.rknn', coreMask: '0_1' });
      const out = await s.run({ pixel_values: { type: 'float32', data: x, dims: [1, 3, 2, 2] } });
      expect(out.image_features!.dims).toEqual([1, 12]);
      Array.from(out.image_features!.data as Float32Array).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
      const into = { type: 'float32', data: new Float32Array(12), dims: [1, 12] };
      expect((await s.run({ pixel_values: { type: 'float32', data: x, dims: [1, 3, 2, 2] } }, { outputs: { image_features: into } })).image_features).toBe(into);
      expect(Array.from(into.data)).toEqual(Array.from(out.image_features!.data as Float32Array));
      expect(await code(s.run({ pixel_values: { type: 'float32', data: x, dims: [1, 12] } }))).toBe('E_INPUT_SHAPE');
      await s.close();
      const calls = (await d.lines()).slice(before);
      expect(calls).toContain('rknn_set_core_mask ctx=ok mask=3');
      expect(calls.at(-1)).toBe('rknn_destroy ctx=ok open_mems=0');
    } finally {
      delete process.env.NANOMIND_RKNN_LIB;
    }
    expect((await rknnBackend.probe()).ok).toBe(false);
  });

  it('a missing librknnrt.so is one E_NPU_LIBRARY line naming it', async () => {
    expect(await code(Promise.resolve().then(() => loadRknn('/nonexistent/librknnrt.so')))).toBe('E_NPU_LIBRARY');
    try { loadRknn('/nonexistent/librknnrt.so'); } catch (e) {
      expect((e as Error).message).toContain('librknnrt.so');
      expect((e as Error).message).not.toContain('\n');
    }
  });
});
