/**
 * The ink UI over a fixture brick set (ink-testing-library): typing a message streams the answer, then
 * /stats, /image with a PNG made by sharp, /reset and Ctrl-D go through the same conversation.
 */
import { join } from 'node:path';
import { createElement } from 'react';
import { render } from 'ink-testing-library';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatApp } from '../../src/chat/app.js';
import { Conversation } from '../../src/chat/session.js';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from '../run/helpers.js';

let model: RuntimeModel;
let png: string;
beforeAll(async () => {
  model = await openModel(await brickSetDir('llava'));
  png = join(await fixtureRoot(), 'app-blue.png');
  await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 0, g: 0, b: 220 } } }).png().toFile(png);
});
afterAll(async () => { await model?.close(); await cleanupFixtures(); });

const tick = () => new Promise((r) => setTimeout(r, 10));
async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

describe('ChatApp', () => {
  it('streams answers, and runs /stats, /image, /reset and Ctrl-D', async () => {
    const c = new Conversation(model, { maxNewTokens: 8, sampling: { temperature: 0 } });
    const app = render(createElement(ChatApp, { conversation: c, title: 'llava-bricks' }));
    const frame = () => app.lastFrame() ?? '';
    expect(frame()).toContain('nanomind chat · llava-bricks');
    expect(frame()).toContain('/image PATH');
    expect(frame()).toMatch(/ready · ctx 0\//);

    const type = async (s: string) => { for (const ch of s) { app.stdin.write(ch); await tick(); } };
    await type('hello');
    await until('the typed line', () => frame().includes('› hello'));
    const before = app.frames.length;
    app.stdin.write('\r');
    await until('the first answer', () => c.turnCount === 1 && /\(\d+ tokens, [\d.]+ tok\/s, 0 prompt tokens reused\)/.test(frame()));
    // While generating, frames showed the answer cursor and the busy status; the final frame has neither.
    const during = app.frames.slice(before);
    expect(during.some((f) => f.includes('▍'))).toBe(true);
    expect(during.some((f) => f.includes('generating… (Ctrl-C stops)'))).toBe(true);
    expect(frame()).not.toContain('▍');
    expect(frame()).toContain('› hello');
    expect(frame()).toMatch(/decode [\d.]+ tok\/s · prefill \d+ tok\/s · TTFT \d+ ms/);

    await type('/stats');
    app.stdin.write('\r');
    await until('/stats', () => frame().includes('reused from the KV cache'));
    expect(frame()).toMatch(/bricks: embed [\d.]+ ms, decoder [\d.]+ ms/);

    await type(`/image ${png}`);
    app.stdin.write('\r');
    await until('the attachment', () => frame().includes('attached to the next message'));
    expect(frame()).toContain('attached: image app-blue.png');
    await type('and this?');
    app.stdin.write('\r');
    await until('the second answer', () => c.turnCount === 2 && !frame().includes('generating…'));
    expect(c.lastStats!.bricks.vision).toBeGreaterThan(0);
    expect(c.lastStats!.reusedTokens).toBeGreaterThan(0);
    expect(frame()).toMatch(new RegExp(`${c.lastStats!.reusedTokens} prompt tokens reused`));

    await type('/image /no/such.png');
    app.stdin.write('\r');
    await until('the error', () => frame().includes('error[E_IMAGE]'));

    await type('/reset');
    app.stdin.write('\r');
    await until('the reset', () => frame().includes('conversation reset'));
    expect(c.history).toHaveLength(0);
    expect(frame()).toMatch(/ready · ctx 0\//);

    // Backspace edits the line; Ctrl-D on a non-empty line does nothing, on an empty one it quits.
    await type('xy');
    await until('xy typed', () => /› xy\s/.test(frame()));
    app.stdin.write('\x7f');
    await until('backspace', () => /› x\s/.test(frame()));
    app.stdin.write('\x04');
    await type('z');
    await until('typing goes on after Ctrl-D on a non-empty line', () => /› xz\s/.test(frame()));
    app.stdin.write('\x15'); // Ctrl-U clears the line
    await until('the cleared line', () => /›\s*\n/.test(frame()) && !/› xz/.test(frame()));
    const frames = app.frames.length;
    app.stdin.write('\x04');
    await new Promise((r) => setTimeout(r, 100));
    await type('ignored');
    expect(app.frames.slice(frames).some((f) => f.includes('ignored'))).toBe(false);
    app.unmount();
  });

  it('Ctrl-C stops an answer that is being generated', async () => {
    const c = new Conversation(model, { maxNewTokens: 2000, sampling: { temperature: 0 }, stopStrings: [] });
    const app = render(createElement(ChatApp, { conversation: c }));
    for (const ch of 'go on') app.stdin.write(ch);
    await tick();
    app.stdin.write('\r');
    await until('streaming', () => (app.lastFrame() ?? '').includes('▍'));
    app.stdin.write('\x03');
    await until('the stopped answer', () => c.turnCount === 1);
    await until('the final frame', () => !(app.lastFrame() ?? '').includes('generating…'));
    expect(app.lastFrame()).toContain('[aborted]');
    expect(c.lastStats!.newTokens).toBeLessThan(400);
    app.unmount();
  });
});
