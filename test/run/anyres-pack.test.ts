/**
 * LLaVA-OneVision anyres pieces without a model: the packing's row count against the processor's token
 * count (LlavaOnevisionProcessor._get_number_of_features, written and tested apart in llava-onevision.ts),
 * the safetensors reader on a file laid out by hand from the format spec, and the errors. The packed
 * values themselves are checked against PyTorch in test/families/llava-anyres.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSafetensor, readSafetensorFloat32, writeSafetensorsFloat32 } from '../../src/formats/safetensors.js';
import { isImageNewlineKey } from '../../src/formats/image-newline.js';
import { floatToHalf } from '../../src/onnx/dtype.js';
import { anyresConfig } from '../../src/run/anyres.js';
import { numberOfFeatures } from '../../src/run/inputs/families/llava-onevision.js';
import { anyresGeometry, packAnyresFeatures } from '../../src/run/inputs/families/llava-onevision-pack.js';
import { code, codeOf } from '../error-codes.js';

// The real llava-onevision-qwen2-0.5b-ov-hf geometry: 384-pixel tiles of 27 × 27 features, pinpoints up to 6 × 6 tiles, anyres_max_9.
const REAL = { pinpoints: Array.from({ length: 36 }, (_, k) => [384 * (Math.trunc(k / 6) + 1), 384 * ((k % 6) + 1)] as [number, number]), tileSize: 384, side: 27, maxNumPatches: 9 };

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'nanomind-anyres-')); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

describe('anyres geometry', () => {
  it("packed rows = the processor's feature count for 2,500 image sizes of the real config", () => {
    const counts = { pinpoints: REAL.pinpoints, tileSize: 384, numImageTokens: 729, maxNumPatches: 9, selectStrategy: 'full' };
    let downscaled = 0;
    for (let h = 37; h < 4000; h += 79) for (let w = 41; w < 4000; w += 79) {
      const g = anyresGeometry(h, w, REAL);
      if (g.outHeight !== g.height) downscaled++;
      expect(g.packedRows, `${w}x${h}`).toBe(numberOfFeatures(h, w, counts));
    }
    expect(downscaled).toBeGreaterThan(100);
    // CPython's value (LlavaOnevisionProcessor._get_number_of_features run by hand): the 50 × 162 map's
    // ratio is 1.1111111111111112 and 50 // ratio is 44 in Python, though 50 / ratio rounds to 45.0.
    expect(numberOfFeatures(590, 1937, counts)).toBe(7153);
  });

  it('a 1 × 1 map is copied, newline appended (no interpolation): exact rows', () => {
    const c = { pinpoints: [[2, 2]] as [number, number][], tileSize: 2, side: 1, maxNumPatches: 9 };
    const out = packAnyresFeatures(Float32Array.of(1, 2, 3, 4), 2, [2, 2], Float32Array.of(9, 8), c);
    expect([...out]).toEqual([1, 2, 3, 4, 9, 8]);
  });

  it('refuses features that do not fit the grid, and a newline of the wrong width', () => {
    const c = { pinpoints: [[2, 2]] as [number, number][], tileSize: 2, side: 1, maxNumPatches: 9 };
    expect(codeOf(() => packAnyresFeatures(new Float32Array(6), 2, [2, 2], new Float32Array(2), c))).toBe('E_ANYRES_FEATURES');
    expect(codeOf(() => packAnyresFeatures(new Float32Array(4), 2, [2, 2], new Float32Array(3), c))).toBe('E_ANYRES_FEATURES');
  });

  it('config.json problems are listed together', () => {
    let notes: readonly string[] = [];
    expect(codeOf(() => {
      try { anyresConfig({ vision_config: { image_size: 384, patch_size: 14 }, image_grid_pinpoints: [[384, 100]], vision_aspect_ratio: 'pad' }, 'config.json'); } catch (e) { notes = (e as { detail: { notes: string[] } }).detail.notes; throw e; }
    })).toBe('E_CONFIG_INVALID');
    expect(notes).toHaveLength(3);
  });
});

describe('safetensors', () => {
  it('reads one tensor (F32, F16) from a file laid out by hand, skipping the others', async () => {
    const file = join(dir, 'model.safetensors');
    const header = JSON.stringify({
      __metadata__: { format: 'pt' },
      'model.lm_head.weight': { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      'model.image_newline': { dtype: 'F16', shape: [3], data_offsets: [8, 14] },
    });
    const body = Buffer.alloc(14);
    body.writeFloatLE(7, 0); body.writeFloatLE(8, 4);
    [0.5, -2, 1024].forEach((v, i) => body.writeUInt16LE(floatToHalf(v), 8 + 2 * i));
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(header.length));
    await writeFile(file, Buffer.concat([len, Buffer.from(header), body]));
    const e = await findSafetensor(dir, isImageNewlineKey);
    expect(e).toMatchObject({ name: 'model.image_newline', dtype: 'F16', shape: [3] });
    expect([...(await readSafetensorFloat32(file, e!.name)).data]).toEqual([0.5, -2, 1024]);
    expect([...(await readSafetensorFloat32(file, 'model.lm_head.weight')).data]).toEqual([7, 8]);
  });

  it('writes what it reads back', async () => {
    const file = join(dir, 'w.safetensors');
    await writeSafetensorsFloat32(file, { image_newline: { data: Float32Array.of(1.5, -3), shape: [2] } });
    expect([...(await readSafetensorFloat32(file, 'image_newline')).data]).toEqual([1.5, -3]);
  });

  it('refuses a truncated header, a missing tensor and offsets that do not match the shape', async () => {
    const bad = join(dir, 'bad.safetensors');
    await writeFile(bad, Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 123]));
    expect(await code(readSafetensorFloat32(bad, 'x'))).toBe('E_SAFETENSORS');
    const ok = join(dir, 'w.safetensors');
    expect(await code(readSafetensorFloat32(ok, 'nope'))).toBe('E_SAFETENSORS');
    const header = JSON.stringify({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 8] } });
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(header.length));
    const off = join(dir, 'off.safetensors');
    await writeFile(off, Buffer.concat([len, Buffer.from(header), Buffer.alloc(8)]));
    expect(await code(readSafetensorFloat32(off, 'x'))).toBe('E_SAFETENSORS');
  });
});
