/**
 * `deploy --doctor` over a real OpenSSH server on 127.0.0.1 (the "board" is this machine, as in
 * test/deploy/deploy-ssh.test.ts): the bundle is sent, `nanomind doctor <bundle> --json` runs there, and
 * its report comes back parsed. Oracle: the board's report must name the placement the bundle.json we
 * compiled records (vision on ort-webgpu when this machine has an adapter), and CPU bricks compare exactly.
 * Skipped, with the reason printed, only when /usr/sbin/sshd is missing.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { deploy } from '../../src/deploy/index.js';
import type { BundleReport } from '../../src/run/doctor.js';
import { partition } from '../../src/partition/index.js';
import { BIN } from '../cli-helper.js';
import { code } from '../error-codes.js';
import { sshdMissing, startSshd, type TestSshd } from '../deploy/sshd.js';

const MODEL = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
if (sshdMissing) console.warn(`deploy --doctor test skipped: ${sshdMissing}`);

describe.skipIf(!!sshdMissing)('deploy --doctor', () => {
  let sshd: TestSshd;
  let work: string;

  beforeAll(async () => {
    [sshd, work] = await Promise.all([startSshd(), mkdtemp(join(tmpdir(), 'nanomind-deploy-doctor-'))]);
  });
  afterAll(async () => {
    await sshd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('runs nanomind doctor on the board after the copy and returns its per-brick report', async () => {
    await partition({ input: MODEL, out: join(work, 'sv') });
    const bundle = join(work, 'bundle');
    await compile({ bricks: join(work, 'sv'), target: 'rk3588', out: bundle, rknn: 'skip', place: [{ brick: 'vision', accelerator: 'gpu' }] });
    const placed = JSON.parse(await readFile(join(bundle, 'bundle.json'), 'utf8')).bricks as { name: string; backend: string }[];
    const remote = join(work, 'board', 'sv');
    const to = `ssh://${sshd.user}@127.0.0.1:${sshd.port}${remote}`;
    const base = { bundle, to, ssh: { config: sshd.config }, skipRuntime: true, remoteNanomind: ['node', BIN] };
    expect(await code(deploy({ ...base, doctor: true, run: ['--version'] }))).toBe('E_USAGE');
    const r = await deploy({ ...base, doctor: true });
    expect(r.run?.exitCode, r.run?.stdout).toBe(0);
    expect(r.run?.command.slice(-3)).toEqual(['doctor', remote, '--json']);
    const report = r.doctor as { machine: { backends: Record<string, { ok: boolean }> }; bundle: BundleReport };
    expect(report.bundle.dir).toBe(remote);
    expect(report.bundle.bricks.map((b) => [b.brick, b.placed])).toEqual(placed.map((b) => [b.name, b.backend]));
    for (const b of report.bundle.bricks) {
      expect(b.error).toBeUndefined();
      if (b.backend === 'ort-cpu') expect([b.cosine, b.maxAbsError]).toEqual([1, 0]);
      // compile's default packed the decoder for the native kernels (Q8 of the float brick): close to ORT, not equal
      else if (b.backend === 'native') expect(b.cosine).toBeGreaterThan(0.999);
      else expect(b.maxAbsError).toBeLessThanOrEqual(1e-3);
    }
    expect(report.bundle.bricks.find((b) => b.brick === 'decoder')!.backend).toBe('native');
    const vision = report.bundle.bricks.find((b) => b.brick === 'vision')!;
    expect(vision.backend).toBe(report.machine.backends['ort-webgpu']!.ok ? 'ort-webgpu' : 'ort-cpu');
  }, 300_000);
});
