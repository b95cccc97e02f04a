/**
 * A text-only decoder that takes input_ids itself (no embed brick), built from the same seeded weights
 * as the LLaVA fixture's embed + decoder: the runtime must detect its role and generate exactly what
 * the split brick set generates for a text prompt.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { saveModel } from '../../src/onnx/model-io.js';
import { partition } from '../../src/partition/index.js';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { ChatSession, generate } from '../../src/run/generation/chat-session.js';
import {
  cleanupFixtures, Ctx, embedTokens, fixtureRoot, generationConfigJson, OPSET, qwen2Decoder, textConfigJson, tinyLlavaConfig,
  Weights, writeJson, type KvNames,
} from '../fixtures/index.js';
import { brickSetDir, releaseSessions } from './helpers.js';

const opened: BrickSet[] = [];
afterAll(async () => {
  for (const s of opened) await s.close();
  await releaseSessions();
  await cleanupFixtures();
});

/** decoder_model_merged.onnx taking input_ids (embedding inside), in an onnx-community folder, partitioned. */
async function textOnlyBrickSet(): Promise<string> {
  const cfg = tinyLlavaConfig();
  const t = cfg.text;
  const b = new GraphBuilder();
  const c = new Ctx(b, new Weights(cfg.seed));
  const ids = b.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  const attentionMask = b.input('attention_mask', 'int64', ['batch_size', 'total_sequence_length']);
  const positionIds = b.input('position_ids', 'int64', ['batch_size', 'sequence_length']);
  const past: KvNames[] = [], present: KvNames[] = [];
  for (let i = 0; i < t.layers; i++) {
    const shape = ['batch_size', t.kvHeads, 'past_sequence_length', t.headDim];
    past.push({ key: b.input(`past_key_values.${i}.key`, 'float32', shape), value: b.input(`past_key_values.${i}.value`, 'float32', shape) });
    present.push({ key: `present.${i}.key`, value: `present.${i}.value` });
  }
  qwen2Decoder(c, t, { embeds: embedTokens(c, ids, t), attentionMask, positionIds, past, present, logitsName: 'logits' });
  b.output('logits', 'float32', ['batch_size', 'sequence_length', t.vocab]);
  for (const p of present)
    for (const n of [p.key, p.value]) b.output(n, 'float32', ['batch_size', t.kvHeads, 'total_sequence_length', t.headDim]);
  const dir = join(await fixtureRoot(), 'text-only');
  await mkdir(join(dir, 'onnx'), { recursive: true });
  await saveModel(b.model({ opset: OPSET }), join(dir, 'onnx', 'decoder_model_merged.onnx'));
  await writeJson(dir, 'config.json', textConfigJson(t));
  await writeJson(dir, 'generation_config.json', generationConfigJson());
  const out = join(dir, 'bricks');
  await partition({ input: dir, out });
  return out;
}

describe('text-only decoder (input_ids, no embed brick)', () => {
  it('is detected and generates what embed + decoder generate', async () => {
    const text = await openBrickSet(await textOnlyBrickSet(), { threads: 1 });
    const split = await openBrickSet(await brickSetDir('llava'), { threads: 1 });
    opened.push(text, split);
    expect(text.manifest.bricks.map((b) => b.kind)).toEqual(['decoder']);
    expect(text.decoder).toMatchObject({ takes: 'input_ids', inputs: { positions: 'flat' }, vocab: 320, kv: { layers: 2, kvHeads: 2, headDim: 16 } });
    expect(text.embed).toBeUndefined();
    expect(text.encoders).toEqual([]);
    expect(text.hidden).toBe(64); // from config.json
    expect(text.eosTokenIds).toEqual([316]);

    const ids = [315, 17, 99, 250, 3, 4, 128, 200, 316, 315, 42];
    const mask = [0, 0, ...ids.slice(2).map(() => 1)];
    const a = await generate(text, { inputIds: ids, attentionMask: mask }, { maxNewTokens: 10, stopTokenIds: [] });
    const b = await generate(split, { inputIds: ids, attentionMask: mask }, { maxNewTokens: 10, stopTokenIds: [] });
    expect(a.tokens).toEqual(b.tokens);
    expect(Object.keys(a.stats.brickMs)).toEqual(['decoder']);

    // Prefix reuse works the same without an embedding arena.
    const chat = new ChatSession(text);
    const t1 = await chat.generate({ inputIds: ids }, { maxNewTokens: 4, stopTokenIds: [] });
    const next = [...ids, ...t1.tokens, 316, 315, 9];
    const t2 = await chat.generate({ inputIds: next }, { maxNewTokens: 6, stopTokenIds: [] });
    expect(t2.stats.reusedTokens).toBe(ids.length + 3);
    expect(t2.tokens).toEqual((await generate(split, { inputIds: next }, { maxNewTokens: 6, stopTokenIds: [] })).tokens);
    await expect(generate(text, { inputIds: ids, features: { 319: new Float32Array(64) } })).rejects.toMatchObject({ code: 'E_BAD_INPUT' });
  });
});
