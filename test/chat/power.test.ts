/**
 * `chat` under the power policy: a fake power-supply folder at 5 % (critical) then 90 % on mains. In
 * critical the vision encoder's sessions are closed once the turn's image is encoded (the decoder stays,
 * and the next turn still reuses its KV cache); /stats shows the state and the transitions. The oracle
 * for the answers is the same conversation without a policy.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Conversation } from '../../src/chat/session.js';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import { powerMonitor } from '../../src/run/power/policy.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from '../run/helpers.js';

let model: RuntimeModel;
let png: string;
let dir: string;
const setBattery = async (capacity: number, mains: boolean) => {
  await mkdir(join(dir, 'BAT0'), { recursive: true });
  await mkdir(join(dir, 'AC'), { recursive: true });
  for (const [k, v] of [['type', 'Battery'], ['capacity', String(capacity)], ['status', 'Discharging']]) await writeFile(join(dir, 'BAT0', k!), `${v}\n`);
  for (const [k, v] of [['type', 'Mains'], ['online', mains ? '1' : '0']]) await writeFile(join(dir, 'AC', k!), `${v}\n`);
};

beforeAll(async () => {
  model = await openModel(await brickSetDir('llava'));
  const root = await fixtureRoot();
  png = join(root, 'chat-power.png');
  await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 10, g: 200, b: 40 } } }).png().toFile(png);
  dir = join(root, 'chat-power-supply');
});
afterAll(async () => { await model?.close(); await cleanupFixtures(); });

describe('Conversation with a power policy', () => {
  it('critical: encoder sessions released after the turn, decoder kept; /stats shows state and transitions; same answers', async () => {
    const opts = { maxNewTokens: 4, sampling: { temperature: 0 } } as const;
    const plain = new Conversation(model, opts);
    await plain.attach('image', png);
    const ref = [await plain.send('What colour?'), await plain.send('Sure?')];

    await setBattery(5, false);
    const c = new Conversation(model, { ...opts, power: powerMonitor({ dir, thresholds: { highPercent: 50, lowPercent: 15 } }), decoderThreads: 2 });
    await c.attach('image', png);
    const a = await c.send('What colour?');
    const encoders = model.set.encoder('vision').chain.map((b) => b.name);
    expect(model.set.openBricks().filter((b) => encoders.includes(b))).toEqual([]);
    expect(model.set.openBricks()).toContain(model.set.decoder.brick.name);
    expect(a.stats.power).toMatchObject({ state: 'critical', alpha: 0, batteryPercent: 5 });
    await setBattery(5, true); // plugged in
    const b = await c.send('Sure?');
    expect(b.stats.reusedTokens).toBeGreaterThan(0); // the KV cache survived the cascade
    expect(b.stats.power!.transitions.map((t) => t.to)).toEqual(['critical', 'unconstrained']);
    expect([[...a.tokens], [...b.tokens]]).toEqual(ref.map((r) => [...r.tokens]));
    const stats = await c.handle('/stats');
    expect(stats).toMatchObject({ kind: 'info' });
    expect((stats as { text: string }).text).toMatch(/^power unconstrained .*2 transition/m);
  }, 30_000);
});
