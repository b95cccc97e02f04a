/**
 * The chat page at `/` in headless Chromium (Debian's `chromium`, driven by playwright-core): upload a
 * held-out image, ask its question, and see the answer arrive in several streamed updates, equal to
 * PyTorch's answer (eval/reference.json), with the per-answer stats line. A second turn shows the KV
 * cache of the first being reused. Without /usr/bin/chromium the test fails and says how to install it.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED_EVAL_SET } from '../../src/eval/embedded.js';
import { agreedRows, serveEmbedded, type Live } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
// Flags for a closed network: no GPU, no QUIC, no background traffic to Google services.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

let live: Live;
let profile: string;
beforeAll(async () => {
  live = await serveEmbedded({ apiKey: 'page-key' });
  profile = await mkdtemp(join(tmpdir(), 'nanomind-chromium-'));
});
afterAll(async () => {
  await live?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

describe('chat page', () => {
  it('uploads an image, streams the answer and shows its stats', async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); .ci/run does`);
    const row = (await agreedRows()).find((r) => r.modality === 'typed' && r.pytorch.split(' ').length >= 5)!;
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    try {
      const page = context.pages()[0] ?? await context.newPage();
      await page.goto(live.url + '/');
      await page.fill('#key', 'page-key');
      await page.setInputFiles('#image', join(EMBEDDED_EVAL_SET, row.image));
      await page.waitForSelector('#preview:not([hidden])');
      // Count the answer's visible updates while it streams.
      // (Browser code as a string: the test typecheck has no DOM types.)
      await page.evaluate(`window.updates = 0;
        new MutationObserver(() => { window.updates++; }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });`);
      await page.fill('#prompt', row.question);
      await page.click('#send');
      await page.waitForSelector('.assistant.done .stats', { timeout: 30_000 });
      expect((await page.textContent('.assistant .text'))!.trim()).toBe(row.pytorch);
      expect(await page.evaluate('window.updates')).toBeGreaterThan(3);
      expect(await page.textContent('.assistant .stats')).toMatch(/\d+ prompt tokens \(0 cached\) · \d+ tokens · first token \d+ ms/);
      expect(await page.locator('.user img').count()).toBe(1);
      // A follow-up turn replays the conversation: the first turn's KV cache is reused.
      await page.fill('#prompt', 'how many shapes are there?');
      await page.click('#send');
      await page.waitForSelector('.assistant.done >> nth=1');
      expect(await page.locator('.assistant .stats').nth(1).textContent()).toMatch(/\(([1-9]\d*) cached\)/);
    } finally {
      await context.close();
    }
  });
});
