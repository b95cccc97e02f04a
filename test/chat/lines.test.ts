/**
 * `nanomind chat` without a terminal: lines in, answers out (text or JSON lines), through the library
 * function and through the real CLI with a piped stdin.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { runLineChat } from '../../src/chat/lines.js';
import { Conversation } from '../../src/chat/session.js';
import { openModel } from '../../src/run/model.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from '../run/helpers.js';

afterAll(async () => { await cleanupFixtures(); });

const sink = () => {
  const s = new PassThrough();
  let text = '';
  s.on('data', (d) => { text += String(d); });
  return { s, text: () => text };
};

describe('line mode', () => {
  it('answers each line, prints notices and errors, and goes on after an error', async () => {
    const m = await openModel(await brickSetDir('llava'));
    try {
      const c = new Conversation(m, { maxNewTokens: 4, sampling: { temperature: 0 } });
      const out = sink(), err = sink();
      const r = await runLineChat(c, { input: Readable.from(['hello\n', '/image /nope.png\n', '\n', 'again\n', '/stats\n', '/exit\n', 'never sent\n']), out: out.s, err: err.s });
      expect(r).toEqual({ turns: 2, errors: 1 });
      expect(out.text()).toMatch(/\n$/); // each answer ends with a newline; nothing after /exit ran
      expect(err.text()).toMatch(/^error\[E_IMAGE\] /m);
      expect(err.text()).toMatch(/prompt \d+ tokens: \d+ reused from the KV cache/);

      const json = sink();
      const j = await runLineChat(c, { input: Readable.from(['/reset\n', 'one\n', '/audio a.wav\n', 'two\n']), out: json.s, err: err.s, json: true });
      expect(j).toEqual({ turns: 2, errors: 1 });
      const lines = json.text().trim().split('\n').map((l) => JSON.parse(l));
      expect(lines.map((l) => Object.keys(l)[0])).toEqual(['info', 'text', 'error', 'text']);
      expect(lines[2].error.code).toBe('E_BRICKS_ROLE');
      expect(lines[1].stats.reusedTokens).toBe(0);
      expect(lines[3].stats.reusedTokens).toBeGreaterThan(0);
      for (const k of ['ttftMs', 'prefillTokPerS', 'decodeTokPerS', 'peakRssMb', 'totalMs']) expect(lines[3].stats[k]).toBeGreaterThan(0);
    } finally {
      await m.close();
    }
  });

  it('the CLI reads stdin line by line when it is not a terminal', async () => {
    const png = join(await fixtureRoot(), 'lines-green.png');
    await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 0, g: 160, b: 0 } } }).png().toFile(png);
    const dir = await brickSetDir('llava');
    const cmd = process.execPath;
    const args = [join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js')];
    const run = (input: string, ...flags: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(cmd, [...args, 'chat', dir, ...flags], { env: { ...process.env, CI: 'true' } },
        (e, stdout, stderr) => resolve({ code: e ? (e as { code: number }).code : 0, stdout, stderr }));
      child.stdin!.end(input);
    });
    const r = await run(`/image ${png}\nwhat is it?\nand now?\n`, '--max-tokens', '5', '--temperature', '0', '--json');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    expect(lines[1].stats.bricks.vision).toBeGreaterThan(0);
    expect(lines[2].stats.reusedTokens).toBeGreaterThanOrEqual(lines[1].stats.promptTokens);
    const bad = await run('hi\n', '--max-tokens', '0');
    expect(bad.code).toBe(2);
  });
});
