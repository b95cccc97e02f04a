/**
 * `nanomind serve` as a user runs it (the built CLI): a non-loopback address without a key is refused
 * before anything is loaded; a server on a free port answers /health, logs JSON lines, and on SIGTERM
 * lets the running streamed answer finish, refuses new connections, and exits 0.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { BIN, cli } from '../cli-helper.js';

describe('nanomind serve (CLI)', () => {
  it('refuses to bind a non-loopback address without --api-key or --no-auth', async () => {
    const r = await cli('serve', EMBEDDED_MODEL, '--host', '0.0.0.0', '--port', '0');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[E_SERVE_UNSAFE\]/m);
  });

  it('serves, then stops gracefully on SIGTERM: the running answer completes', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', EMBEDDED_MODEL, '--port', '0', '--json-log'], { env: { ...process.env, CI: 'true' } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d; });
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 60_000;
      while (!/http:\/\/127\.0\.0\.1:\d+/.test(stdout) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const url = /http:\/\/127\.0\.0\.1:\d+/.exec(stdout)![0];
      expect(await (await fetch(`${url}/health`)).json()).toMatchObject({ status: 'ok', model: 'shapes-vlm' });
      const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'shapes-vlm', stream: true, ignore_eos: true, max_tokens: 60, messages: [{ role: 'user', content: 'describe the image.' }] }) });
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let body = dec.decode((await reader.read()).value);
      child.kill('SIGTERM');
      for (let c = await reader.read(); !c.done; c = await reader.read()) body += dec.decode(c.value);
      expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const usage = JSON.parse(body.split('\n\n').filter((e) => e.includes('"usage"'))[0]!.slice(6)) as { usage: { completion_tokens: number } };
      expect(usage.usage.completion_tokens).toBe(60);
      expect(await exited).toBe(0);
      expect(await fetch(`${url}/health`).then(() => 'answered', () => 'refused')).toBe('refused');
      const log = stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { path: string; status: number; completionTokens?: number });
      expect(log.find((l) => l.path === '/v1/chat/completions')).toMatchObject({ status: 200, completionTokens: 60 });
      expect(stderr).toMatch(/SIGTERM, stopping/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
