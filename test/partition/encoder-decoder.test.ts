/**
 * Partition adopts an encoder-decoder folder (Whisper: encoder_model + decoder_model_merged) as an
 * audio brick and a decoder brick joined by a cross-attention connection.
 *
 * Oracles: the source files themselves (sha256 computed here with node:crypto, byte-identical copies),
 * and parameter counts computed here from the fixture config with Whisper's layer formulas.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTinyWhisper, encoderPositions, type TinyWhisperFiles } from '../../src/fixtures/whisper-asr.js';
import { partition } from '../../src/partition/index.js';
import { inspectModel } from '../../src/partition/inspect.js';
import { readBricksManifest } from '../../src/formats/bricks.js';
import { code } from '../error-codes.js';

let root: string;
let fx: TinyWhisperFiles;
const sha = async (f: string) => createHash('sha256').update(await readFile(f)).digest('hex');

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-whisper-partition-'));
  fx = await buildTinyWhisper(join(root, 'tiny-whisper'));
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

/** Whisper parameters: pre-LN layers, k_proj without bias; the decoder adds cross-attention and ties proj_out. */
function expectedParams(c: TinyWhisperFiles['config']): { audio: number; decoder: number } {
  const d = c.dModel, f = c.ffn;
  const ln = 2 * d, lin = (i: number, o: number, bias = true) => i * o + (bias ? o : 0);
  const attn = lin(d, d) + lin(d, d, false) + lin(d, d) + lin(d, d);
  const mlp = lin(d, f) + lin(f, d);
  const audio = lin(c.melBins * 3, d) + lin(d * 3, d) + encoderPositions(c) * d + c.encoderLayers * (2 * ln + attn + mlp) + ln;
  const decoder = c.vocab * d + c.maxTargetPositions * d + c.decoderLayers * (3 * ln + 2 * attn + mlp) + ln
    + c.vocab; // the fixture's eos ramp row
  return { audio, decoder };
}

describe('partition of a Whisper folder', () => {
  it('gives an audio brick and a decoder brick, byte-identical, joined by cross-attention', async () => {
    const out = join(root, 'bricks');
    const r = await partition({ input: fx.dir, out });
    const m = await readBricksManifest(out);
    expect(m.bricks.map((b) => [b.name, b.kind, b.file])).toEqual([
      ['audio', 'audio', 'encoder_model.onnx'], ['decoder', 'decoder', 'decoder_model_merged.onnx']]);
    expect(m.bricks[0]!.sha256).toBe(await sha(fx.files.fp32.encoder));
    expect(m.bricks[1]!.sha256).toBe(await sha(fx.files.fp32.decoder));
    expect(m.connections).toEqual([{ from: 'audio.last_hidden_state', to: 'decoder.encoder_hidden_states', cross: { mode: 'cross-attention' } }]);
    expect(m.model.layout).toBe('split');
    expect(m.verify).toBeNull();
    const want = expectedParams(fx.config);
    expect(m.bricks.map((b) => b.params)).toEqual([want.audio, want.decoder]);
    expect(m.files.map((f) => f.path)).toEqual(expect.arrayContaining(['config.json', 'generation_config.json', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json']));
    expect(r.notes.join('\n')).toContain('cross-attention');
    const dec = m.bricks[1]!;
    expect(dec.inputs.map((i) => i.name)).toEqual(['input_ids', 'encoder_hidden_states',
      ...Array.from({ length: fx.config.decoderLayers }, (_, i) => ['decoder.key', 'decoder.value', 'encoder.key', 'encoder.value'].map((s) => `past_key_values.${i}.${s}`)).flat(),
      'use_cache_branch']);
  });

  it('inspect reports the same two bricks', async () => {
    const r = await inspectModel(fx.dir, { dtype: 'quantized' });
    const want = expectedParams(fx.config);
    expect(r.bricks.map((b) => [b.name, b.kind, b.params])).toEqual([['audio', 'audio', want.audio], ['decoder', 'decoder', want.decoder]]);
    expect(r.files.map((f) => f.file)).toEqual(['onnx/encoder_model_quantized.onnx', 'onnx/decoder_model_merged_quantized.onnx']);
  });

  it('--dtype picks the variant pair, and a missing one is one clear error', async () => {
    const out = join(root, 'bricks-fp16');
    await partition({ input: fx.dir, out, dtype: 'fp16' });
    const m = await readBricksManifest(out);
    expect(m.bricks.map((b) => b.file)).toEqual(['encoder_model_fp16.onnx', 'decoder_model_merged_fp16.onnx']);
    expect(m.bricks[1]!.sha256).toBe(await sha(fx.files.fp16.decoder));
    expect(await code(partition({ input: fx.dir, out: join(root, 'bricks-q4'), dtype: 'q4' }))).toBe('E_PARTITION_DTYPE');
  });

  it('refuses an encoder that is not an audio encoder', async () => {
    const dir = join(root, 'text-encoder');
    const onnx = join(dir, 'onnx');
    await buildTinyWhisper(dir);
    // An encoder taking input_ids (as T5 / BART do): the decoder file has that input.
    await copyFile(join(onnx, 'decoder_model_merged.onnx'), join(onnx, 'encoder_model.onnx'));
    expect(await code(partition({ input: dir, out: join(root, 'bricks-text') }))).toBe('E_PARTITION_ENCODER_DECODER');
  });

  it('bricks.json: a cross connection with an unknown mode is rejected', async () => {
    const out = join(root, 'bricks-bad');
    await partition({ input: fx.dir, out });
    const file = join(out, 'bricks.json');
    const j = JSON.parse(await readFile(file, 'utf8'));
    j.connections[0].cross.mode = 'concat';
    await writeFile(file, JSON.stringify(j));
    expect(await code(readBricksManifest(out))).toBe('E_BRICKS_INVALID');
  });
});
