/**
 * The real CLI on models/shapes-vlm/monolithic given as a FOLDER: partition cuts the four bricks, run
 * answers from them. Oracle: the same model's split export (models/shapes-vlm, onnx/*.onnx, written by
 * PyTorch's exporter separately from the monolithic graph) run the same way must give the same tokens.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { noKvCacheNotice } from '../../src/formats/kv-cache.js';
import { cli } from '../cli-helper.js';

const SHAPES = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
const IMAGE = join(SHAPES, 'calib', 'images', 'spoken-0016.png');
let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-layouts-cli-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

describe('nanomind partition / inspect / run on a monolithic model folder', () => {
  it('partition cuts four bricks, inspect sees the same four, run answers as the split export does', async () => {
    const out = join(work, 'bricks');
    const p = await cli('partition', join(SHAPES, 'monolithic'), '-o', out, '--json');
    expect(p.code, p.stderr).toBe(0);
    const parts = JSON.parse(p.stdout);
    expect(parts.bricks.map((b: { name: string }) => b.name)).toEqual(['vision', 'audio', 'embed', 'decoder']);
    expect(parts.verify.ok).toBe(true);
    const notice = noKvCacheNotice(parts.bricks)!;
    expect(parts.notes).toContain(notice);

    for (const input of [join(SHAPES, 'monolithic'), join(SHAPES, 'monolithic', 'model.onnx')]) {
      const i = await cli('inspect', input, '--json');
      expect(i.code, i.stderr).toBe(0);
      expect(JSON.parse(i.stdout).bricks.map((b: { name: string; params: number }) => [b.name, b.params]))
        .toEqual(parts.bricks.map((b: { name: string; params: number }) => [b.name, b.params]));
    }

    const args = ['--image', IMAGE, '--prompt', 'what shape is it?', '--max-tokens', '4', '--json'];
    const mono = await cli('run', out, ...args);
    expect(mono.code, mono.stderr).toBe(0);
    expect(mono.stderr).toContain(`notice: ${notice}`);
    const split = await cli('run', SHAPES, ...args);
    expect(split.code, split.stderr).toBe(0);
    expect(split.stderr).not.toContain(notice);
    expect(JSON.parse(mono.stdout).tokens).toEqual(JSON.parse(split.stdout).tokens);
    expect(JSON.parse(mono.stdout).tokens.length).toBeGreaterThan(0);
  });

  it('an encoder-decoder folder it cannot adopt (the decoder has no encoder_hidden_states) is refused with its own code, as JSON too', async () => {
    const { mkdir, copyFile } = await import('node:fs/promises');
    const dir = join(work, 'whisper');
    await mkdir(join(dir, 'onnx'), { recursive: true });
    await copyFile(join(SHAPES, 'onnx', 'audio_encoder.onnx'), join(dir, 'onnx', 'encoder_model.onnx'));
    await copyFile(join(SHAPES, 'onnx', 'decoder_model_merged.onnx'), join(dir, 'onnx', 'decoder_model_merged.onnx'));
    for (const verb of [['partition', dir, '-o', join(work, 'never'), '--json'], ['inspect', dir, '--json']]) {
      const r = await cli(...verb);
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout || r.stderr).error.code).toBe('E_PARTITION_ENCODER_DECODER');
    }
  });
});
