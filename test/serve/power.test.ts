/**
 * `serve` under the battery-aware policy: a fake power-supply folder (the layout of
 * /sys/class/power_supply) is rewritten while the server runs, 80 % → 30 % → 5 % → 80 %, and each state
 * shows in /health and /metrics and acts on the requests: proportional reopens the decoder with α of its
 * threads, critical releases the vision encoder's session after each request's image (the cascade).
 *
 * Oracle for the answers: PyTorch's greedy answer to the same held-out question and image
 * (models/shapes-vlm/eval/reference.json, see ./helpers.ts), the same in every state. Oracle for the
 * cascade: the brick set's list of open sessions, read beside the server in this process.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { BIN } from '../cli-helper.js';
import { powerMonitor } from '../../src/run/power/policy.js';
import { agreedRows, dataUrl, evalFile, metric, MODEL_ID, serveEmbedded, type Live } from './helpers.js';

let root: string;
let live: Live;
const battery = (percent: number) => writeFile(join(root, 'BAT0', 'capacity'), `${percent}\n`);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-serve-power-'));
  await mkdir(join(root, 'BAT0'));
  await writeFile(join(root, 'BAT0', 'type'), 'Battery\n');
  await writeFile(join(root, 'BAT0', 'status'), 'Discharging\n');
  await battery(80);
  live = await serveEmbedded({ power: powerMonitor({ dir: root, thresholds: { highPercent: 50, lowPercent: 15 } }), decoderThreads: 2 });
});
afterAll(async () => { await live?.close(); await rm(root, { recursive: true, force: true }); });

describe('serve --power-supply', () => {
  it('follows the battery through all three states: /health, /metrics, decoder threads, cascade; answers unchanged', async () => {
    const row = (await agreedRows()).find((r) => r.modality === 'typed')!;
    const image = dataUrl(await evalFile(row.image));
    const ask = async () => {
      const res = await fetch(`${live.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'text', text: row.question }, { type: 'image_url', image_url: { url: image } }] }] }) });
      expect(res.status).toBe(200);
      return ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    };
    const health = async () => ((await (await fetch(`${live.url}/health`)).json()) as { power: Record<string, any> }).power;
    const vision = live.model.set.encoder('vision').chain.map((b) => b.name);
    const visionOpen = () => vision.some((b) => live.model.set.openBricks().includes(b));

    // 80 %: unconstrained, the encoder stays open after a request.
    expect(await health()).toMatchObject({ state: 'unconstrained', alpha: 1, battery_percent: 80, transitions: [] });
    expect(await ask()).toBe(row.pytorch);
    expect(visionOpen()).toBe(true);
    expect(await metric(live.url, 'nanomind_power_state{state="unconstrained"}')).toBe(1);

    // 30 %: proportional, α = (30 − 15) / (50 − 15); the decoder reopens with round(α × 2) = 1 thread.
    await battery(30);
    const p = await health();
    expect(p.state).toBe('proportional');
    expect(p.alpha).toBeCloseTo(15 / 35, 9);
    expect(await ask()).toBe(row.pytorch);
    expect(await metric(live.url, 'nanomind_decoder_threads')).toBe(1);
    expect(await metric(live.url, 'nanomind_power_alpha')).toBeCloseTo(15 / 35, 6);
    expect(await metric(live.url, 'nanomind_power_state{state="proportional"}')).toBe(1);
    expect(await metric(live.url, 'nanomind_power_state{state="unconstrained"}')).toBe(0);

    // 5 %: critical; the open encoder is released before the request, and its session again after the image.
    await battery(5);
    expect(await ask()).toBe(row.pytorch);
    expect(visionOpen()).toBe(false);
    const released = await metric(live.url, 'nanomind_power_encoder_releases_total');
    expect(released).toBeGreaterThanOrEqual(2);
    expect(await metric(live.url, 'nanomind_power_state{state="critical"}')).toBe(1);
    expect(await metric(live.url, 'nanomind_power_alpha')).toBe(0);
    expect(await ask()).toBe(row.pytorch); // encoded on demand again, released again
    expect(visionOpen()).toBe(false);
    expect(await metric(live.url, 'nanomind_power_encoder_releases_total')).toBe(released + vision.length);

    // 80 %: unconstrained again (past the hysteresis); the decoder gets its 2 threads back on the next request.
    await battery(80);
    expect(await ask()).toBe(row.pytorch);
    expect(visionOpen()).toBe(true);
    expect(await metric(live.url, 'nanomind_decoder_threads')).toBe(2);
    const h = await health();
    expect(h.transitions.map((t: { from: string; to: string }) => `${t.from}→${t.to}`)).toEqual(['unconstrained→proportional', 'proportional→critical', 'critical→unconstrained']);
    expect(h.transitions.map((t: { batteryPercent: number }) => t.batteryPercent)).toEqual([30, 5, 80]);
    expect(await metric(live.url, 'nanomind_power_transitions_total')).toBe(3);
    expect(await metric(live.url, 'nanomind_battery_percent')).toBe(80);
  }, 60_000);

  it('the CLI reads --power-supply: /health says critical, stderr logs the one transition', async () => {
    const low = join(root, 'low');
    await mkdir(join(low, 'BAT1'), { recursive: true });
    for (const [k, v] of [['type', 'Battery'], ['capacity', '5'], ['status', 'Discharging']]) await writeFile(join(low, 'BAT1', k!), `${v}\n`);
    const child = spawn(process.execPath, [BIN, 'serve', EMBEDDED_MODEL, '--port', '0', '--power-supply', low], { env: { ...process.env, CI: 'true' } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d; });
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    try {
      const deadline = Date.now() + 60_000;
      while (!/http:\/\/127\.0\.0\.1:\d+/.test(stdout) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const url = /http:\/\/127\.0\.0\.1:\d+/.exec(stdout)![0];
      expect(((await (await fetch(`${url}/health`)).json()) as { power: unknown }).power).toMatchObject({ state: 'critical', alpha: 0, battery_percent: 5 });
      expect(stderr.split('\n').filter((l) => l.startsWith('power: '))).toEqual([expect.stringMatching(/^power: unconstrained → critical \(battery 5% ≤ 15%/)]);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
