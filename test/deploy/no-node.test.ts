/**
 * A board whose Node is too old for the runtime (Node 18, as Debian bookworm's nodejs): the readiness
 * table marks it, and deploy refuses before sending anything, naming the exact install step for the
 * board's CPU. The "board" is a real OpenSSH server on loopback whose PATH finds a `node` that reports
 * v18.19.0 first. Oracle: nodejs.org's published file naming (node-vX-linux-ARCH.tar.xz) and `uname -m`.
 */
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNanomindError } from '../../src/errors.js';
import { deploy } from '../../src/deploy/index.js';
import { nodeInstallStep, type ReadinessRow } from '../../src/deploy/probe.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { sshdMissing, startSshd, type TestSshd } from './sshd.js';

if (sshdMissing) console.warn(`deploy no-node tests skipped: ${sshdMissing}`);

describe.skipIf(!!sshdMissing)('a board with Node 18', () => {
  let sshd: TestSshd;
  let work: string;
  let bundle: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'nanomind-nonode-'));
    await mkdir(join(work, 'oldnode'));
    await writeFile(join(work, 'oldnode', 'node'), '#!/bin/sh\necho v18.19.0\n');
    await chmod(join(work, 'oldnode', 'node'), 0o755);
    sshd = await startSshd({ pathPrefix: join(work, 'oldnode') });
    bundle = join(work, 'bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bundle });
  });
  afterAll(async () => {
    await sshd?.stop();
    await rm(work, { recursive: true, force: true });
    await cleanupFixtures();
  });

  it('readiness says Node is missing; deploy refuses with E_DEPLOY_NO_NODE and the exact install step, sending nothing', async () => {
    let rows: readonly ReadinessRow[] = [];
    const remote = join(work, 'board', 'llava');
    const e = await deploy({ bundle, to: `ssh://${sshd.user}@127.0.0.1:${sshd.port}${remote}`, ssh: { config: sshd.config }, runtimeDir: join(work, 'rt'),
      onReadiness: (r) => { rows = r; } }).then(() => undefined, (x: unknown) => x);
    if (!isNanomindError(e)) throw new Error(`expected a NanomindError, got ${String(e)}`);
    expect(e.code).toBe('E_DEPLOY_NO_NODE');
    expect(rows.find((r) => r.check === 'Node.js')).toMatchObject({ status: 'missing' });
    const arch = (await execa('uname', ['-m'])).stdout;
    const dist = { x86_64: 'x64', aarch64: 'arm64' }[arch];
    const step = nodeInstallStep(arch);
    expect(step).toContain(`/node-v20.`);
    expect(step).toMatch(new RegExp(`node-v20\\.\\d+\\.\\d+-linux-${dist}\\.tar\\.xz `));
    expect(e.detail.hint).toContain(step);
    expect(await readdir(join(work, 'board')).catch(() => [])).toEqual([]);
    expect(nodeInstallStep('mips')).toBeUndefined();
  });
});
