/**
 * `deploy --serve` over a real OpenSSH server on 127.0.0.1 (the "board" is this machine): the embedded
 * model's brick set is deployed and `nanomind serve` started there as a detached process; it answers a
 * held-out image question as PyTorch does (eval/reference.json). A second deploy stops the old server
 * (its pid is gone) before starting the new one. The systemd path is checked as text only (no user
 * systemd here). Skipped, with the reason printed, only when /usr/sbin/sshd is missing.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, type DeployOptions } from '../../src/deploy/index.js';
import { serviceUnit, systemdWord } from '../../src/deploy/service.js';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { partition } from '../../src/partition/index.js';
import { agreedRows, dataUrl, evalFile } from '../serve/helpers.js';
import { freePort, sshdMissing, startSshd, type TestSshd } from './sshd.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js');
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

describe('systemd unit text', () => {
  it('quotes every ExecStart word for systemd', () => {
    expect(systemdWord('a b"c\\d%e$f')).toBe('"a b\\"c\\\\d%%e$$f"');
    const unit = serviceUnit(['/usr/bin/node', 'rt/bin/nanomind.js', 'serve', 'models/x', '--port', '8080'], '/h/.nanomind/serve/serve.env', '/h');
    expect(unit).toMatch(/^ExecStart="\/usr\/bin\/node" "rt\/bin\/nanomind.js" "serve" "models\/x" "--port" "8080"$/m);
    expect(unit).toMatch(/^EnvironmentFile=-\/h\/.nanomind\/serve\/serve.env$/m);
    expect(unit).toMatch(/^KillSignal=SIGTERM$/m);
  });
});

if (sshdMissing) console.warn(`deploy --serve tests skipped: ${sshdMissing}`);

describe.skipIf(!!sshdMissing)('deploy --serve over ssh', () => {
  let sshd: TestSshd;
  let work: string;
  let opts: DeployOptions;
  const pids: number[] = [];

  beforeAll(async () => {
    [sshd, work] = await Promise.all([startSshd(), mkdtemp(join(tmpdir(), 'nanomind-deploy-serve-'))]);
    const bundle = join(work, 'shapes');
    await partition({ input: EMBEDDED_MODEL, out: bundle });
    opts = {
      bundle, to: `ssh://${sshd.user}@127.0.0.1:${sshd.port}${join(work, 'board', 'shapes')}`, ssh: { config: sshd.config },
      skipRuntime: true, remoteNanomind: ['node', BIN],
      serve: { port: await freePort(), mode: 'process', stateDir: join(work, 'state') },
    };
  });

  afterAll(async () => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGTERM');
    await sshd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('starts the server on the board, and a re-deploy replaces it', async () => {
    const first = await deploy(opts);
    pids.push(first.serve!.pid);
    expect(first.serve).toMatchObject({ mode: 'process', url: `http://127.0.0.1:${opts.serve!.port}`, stopped: undefined });
    expect(first.notes.some((n) => n.includes('ssh -N -L'))).toBe(true);
    expect(alive(first.serve!.pid)).toBe(true);
    const row = (await agreedRows()).find((r) => r.modality === 'typed')!;
    const ask = async () => (await (await fetch(`${first.serve!.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'shapes', messages: [{ role: 'user', content: [{ type: 'text', text: row.question }, { type: 'image_url', image_url: { url: dataUrl(await evalFile(row.image)) } }] }] }),
    })).json()) as { choices: { message: { content: string } }[] };
    expect((await ask()).choices[0]!.message.content.trim()).toBe(row.pytorch);

    const second = await deploy(opts);
    pids.push(second.serve!.pid);
    expect(second.serve!.stopped).toBe(String(first.serve!.pid));
    expect(alive(first.serve!.pid)).toBe(false);
    expect(second.serve!.pid).not.toBe(first.serve!.pid);
    expect((await ask()).choices[0]!.message.content.trim()).toBe(row.pytorch);
  });
});
