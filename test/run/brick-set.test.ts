/**
 * Role detection in openBrickSet, from bricks.json alone (sessions open lazily, so the brick files of
 * these synthetic manifests are never loaded), plus the roles of the real fixture brick sets.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BRICKS_FORMAT, BRICKS_VERSION, writeBricksManifest, type BrickEntry, type Connection, type TensorSpec } from '../../src/formats/bricks.js';
import { openBrickSet } from '../../src/run/brick-set.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir, releaseSessions } from './helpers.js';

afterAll(async () => {
  await releaseSessions();
  await cleanupFixtures();
});

const t = (name: string, dtype: string, shape: TensorSpec['shape']): TensorSpec => ({ name, dtype, shape });
const brick = (name: string, kind: BrickEntry['kind'], inputs: TensorSpec[], outputs: TensorSpec[]): BrickEntry =>
  ({ name, kind, file: `${name}.onnx`, dataFiles: [], sha256: '0'.repeat(64), inputs, outputs, params: 0, bytes: 0, nodes: 0 });
const kv = (prefix: string, layers: number, len: string, shape: (l: string) => TensorSpec['shape'] = (l) => ['batch', 4, l, 32]) =>
  Array.from({ length: layers }, (_, i) => ['key', 'value'].map((x) => t(`${prefix}.${i}.${x}`, 'float16', shape(len)))).flat();

async function manifestDir(bricks: BrickEntry[], connections: Connection[] = [], files: Record<string, unknown> = {}): Promise<string> {
  const dir = await mkdtemp(join(await fixtureRoot(), 'roles-'));
  for (const b of bricks) await writeFile(join(dir, b.file), 'not onnx');
  for (const [name, v] of Object.entries(files)) await writeFile(join(dir, name), JSON.stringify(v));
  await writeBricksManifest(dir, {
    format: BRICKS_FORMAT, version: BRICKS_VERSION, model: { id: 't', layout: 'split', source: '/x' }, sources: [], bricks, connections,
    files: Object.keys(files).map((path) => ({ path, sha256: '0'.repeat(64), bytes: 1 })), verify: null, createdBy: 'test',
  });
  return dir;
}

const textDecoder = (extra: TensorSpec[] = []) => brick('lm', 'decoder',
  [t('input_ids', 'int64', ['batch', 'seq']), t('attention_mask', 'int64', ['batch', 'total']), ...kv('past_key_values', 3, 'past'), ...extra],
  [t('logits', 'float16', ['batch', 'seq', 1000]), ...kv('present', 3, 'total')]);

describe('roles', () => {
  it('a text-only decoder: KV layout from the past inputs, eos ids and context from the configs', async () => {
    const dir = await manifestDir([textDecoder()], [], {
      'config.json': { hidden_size: 128, max_position_embeddings: 2048, eos_token_id: 2 },
      'generation_config.json': { eos_token_id: [2, 7] },
    });
    const set = await openBrickSet(dir, { checkHashes: false });
    expect(set.decoder).toMatchObject({ takes: 'input_ids', inputs: { positions: 'none' }, vocab: 1000,
      kv: { layers: 3, kvHeads: 4, headDim: 32, dtype: 'float16', past: [{ key: 'past_key_values.0.key', value: 'past_key_values.0.value' }, {}, {}] } });
    expect(set.decoder.kv!.present[2]).toEqual({ key: 'present.2.key', value: 'present.2.value' });
    expect(set).toMatchObject({ hidden: 128, eosTokenIds: [2, 7], maxPositions: 2048, encoders: [], embed: undefined });
    // Opening happens on first use: a broken file is reported then, naming the brick.
    await expect(set.session('lm')).rejects.toMatchObject({ code: 'E_BRICK_OPEN' });
    await set.close();
  });

  it('KV heads / head dim fall back to config.json when the past shape is symbolic', async () => {
    const dec = brick('lm', 'decoder',
      [t('input_ids', 'int64', ['b', 's']), ...kv('past_key_values', 1, 'p', (l) => ['b', 'h', l, 'd'])],
      [t('logits', 'float32', ['b', 's', 10]), ...kv('present', 1, 't', (l) => ['b', 'h', l, 'd'])]);
    const dir = await manifestDir([dec], [], { 'config.json': { text_config: { hidden_size: 64, num_attention_heads: 8, num_key_value_heads: 2 } } });
    const set = await openBrickSet(dir, { checkHashes: false });
    expect(set.decoder.kv).toMatchObject({ kvHeads: 2, headDim: 8 });
    await set.close();
    const bare = await manifestDir([dec]);
    await expect(openBrickSet(bare, { checkHashes: false })).rejects.toMatchObject({ code: 'E_BRICKS_ROLE' });
  });

  it('refuses brick sets it cannot drive', async () => {
    const role = { code: 'E_BRICKS_ROLE' };
    const embedsDecoder = brick('dec', 'decoder', [t('inputs_embeds', 'float32', [1, 's', 64])], [t('logits', 'float32', [1, 's', 10])]);
    await expect(openBrickSet(await manifestDir([embedsDecoder]), { checkHashes: false })).rejects.toMatchObject(role);
    await expect(openBrickSet(await manifestDir([textDecoder(), { ...textDecoder(), name: 'lm2' }]), { checkHashes: false })).rejects.toMatchObject(role);
    await expect(openBrickSet(await manifestDir([textDecoder([t('image_grid_hw', 'int64', ['n', 2])])]), { checkHashes: false })).rejects.toMatchObject(role);
    const halfKv = brick('lm', 'decoder', [t('input_ids', 'int64', [1, 's']), t('past_key_values.0.key', 'float32', [1, 2, 'p', 4])],
      [t('logits', 'float32', [1, 's', 10]), t('present.0.key', 'float32', [1, 2, 't', 4])]);
    await expect(openBrickSet(await manifestDir([halfKv]), { checkHashes: false })).rejects.toMatchObject(role);
    const noLogits = brick('lm', 'decoder', [t('input_ids', 'int64', [1, 's'])], [t('scores', 'float32', [1, 's', 10])]);
    await expect(openBrickSet(await manifestDir([noLogits]), { checkHashes: false })).rejects.toMatchObject(role);
  });

  it('encoder chains follow plain connections back from the merge (vision → projector)', async () => {
    const vision = brick('vision', 'vision', [t('pixel_values', 'float32', [1, 3, 8, 8])], [t('vision_hidden_states', 'float32', [1, 4, 16])]);
    const projector = brick('projector', 'projector', [t('vision_hidden_states', 'float32', [1, 4, 16])], [t('image_features', 'float32', [1, 4, 32])]);
    const embed = brick('embed', 'embed', [t('input_ids', 'int64', [1, 's'])], [t('inputs_embeds', 'float32', [1, 's', 32])]);
    const dec = brick('decoder', 'decoder', [t('inputs_embeds', 'float32', [1, 's', 32]), t('attention_mask', 'int64', [1, 't'])],
      [t('logits', 'float32', [1, 's', 10])]);
    const dir = await manifestDir([vision, projector, embed, dec], [
      { from: 'vision.vision_hidden_states', to: 'projector.vision_hidden_states' },
      { from: 'embed.inputs_embeds', to: 'decoder.inputs_embeds' },
      { from: 'projector.image_features', to: 'decoder.inputs_embeds', merge: { placeholderTokenId: 9, mode: 'replace-rows' } },
    ]);
    const set = await openBrickSet(dir, { checkHashes: false });
    expect(set.encoders).toHaveLength(1);
    expect(set.encoder(9)).toBe(set.encoder('vision'));
    expect(set.encoder(9)).toMatchObject({ kind: 'vision', input: { name: 'pixel_values' }, output: { name: 'image_features' }, placeholderTokenId: 9 });
    expect(set.encoder(9).chain.map((b) => b.name)).toEqual(['vision', 'projector']);
    expect(set).toMatchObject({ hidden: 32, decoder: { takes: 'inputs_embeds', kv: undefined }, embed: { name: 'embed' }, eosTokenIds: [] });
    expect(() => set.encoder('audio')).toThrow(expect.objectContaining({ code: 'E_BRICKS_ROLE' }));
    await set.close();
  });

  it('the fixture brick sets', async () => {
    for (const [name, kind, token] of [['llava', 'vision', 319], ['audio', 'audio', 318]] as const) {
      const set = await openBrickSet(await brickSetDir(name), { checkHashes: false });
      expect(set.encoders.map((e) => [e.kind, e.placeholderTokenId, e.chain.length])).toEqual([[kind, token, 1]]);
      expect(set).toMatchObject({ hidden: 64, eosTokenIds: [316], maxPositions: 512, backend: { id: 'ort-cpu' }, skippedBackends: [],
        decoder: { takes: 'inputs_embeds', inputs: { positions: 'flat', embedsType: 'float32' }, vocab: 320, kv: { layers: 2, kvHeads: 2, headDim: 16 } } });
      await set.close();
    }
  });
});
