/**
 * Faults on the way to a board (a real OpenSSH server on loopback, test/deploy/sshd.ts): the board's disk
 * fills up mid-transfer (a 4 MiB tmpfs as the target's filesystem, the probe's free space overridden so
 * the early check lets it through), the ssh connection is killed mid-transfer (the server's session
 * processes killed), and two deploys race to the same path. Every time: the bundle at the target path is
 * the old one or the new one, whole (sha256 of every file read back from disk is the oracle), the error
 * has one code, and the next deploy completes. The tmpfs needs root; those cases are skipped without it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, type DeployOptions } from '../../src/deploy/index.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { tree } from './tree.js';
import { sshdMissing, startSshd, type TestSshd } from './sshd.js';

const codeOf = (p: Promise<unknown>) => p.then(() => 'resolved', (e: { code?: string }) => e.code ?? String(e));
const root = process.getuid?.() === 0;

if (sshdMissing) console.warn(`deploy fault tests skipped: ${sshdMissing}`);
if (!root) console.warn('deploy disk-full test skipped: mounting a small tmpfs needs root');

describe.skipIf(!!sshdMissing)('deploy faults', () => {
  let sshd: TestSshd;
  let work: string;
  let bundle: string;
  const opts = (remote: string, o: Partial<DeployOptions> = {}): DeployOptions =>
    ({ bundle, to: `ssh://${sshd.user}@127.0.0.1:${sshd.port}${remote}`, ssh: { config: sshd.config }, skipRuntime: true, ...o });

  beforeAll(async () => {
    [sshd, work] = await Promise.all([startSshd(), mkdtemp(join(tmpdir(), 'nanomind-faults-'))]);
    bundle = join(work, 'bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bundle });
  });
  afterAll(async () => {
    await sshd?.stop();
    await execa('umount', [join(work, 'small')], { reject: false });
    await rm(work, { recursive: true, force: true });
    await cleanupFixtures();
  });

  for (const copy of ['scp', 'rsync'] as const) {
    it.skipIf(!root)(`the board's disk fills up mid-transfer (${copy}): E_DEPLOY_NO_SPACE, old bundle intact, the next deploy (more space) completes`, async () => {
      const disk = join(work, 'small');
      await mkdir(disk, { recursive: true });
      await execa('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', disk]);
      try {
        const remote = join(disk, 'llava');
        await rm(join(bundle, 'big.bin'), { force: true });
        const first = await deploy(opts(remote, { ssh: { config: sshd.config, copy } }));
        expect(first.verified).toBe(true);
        const before = await tree(remote);
        await writeFile(join(bundle, 'big.bin'), randomBytes(6 << 20));
        expect(await codeOf(deploy(opts(remote, { ssh: { config: sshd.config, copy }, probeFreeKb: 1 << 20 })))).toBe('E_DEPLOY_NO_SPACE');
        expect(await tree(remote)).toEqual(before);
        await execa('mount', ['-o', 'remount,size=32m', disk]);
        const r = await deploy(opts(remote, { ssh: { config: sshd.config, copy } }));
        expect(r.verified).toBe(true);
        expect(await tree(remote)).toEqual(await tree(bundle));
        expect((await readdir(disk)).sort()).toEqual(['llava']);
      } finally {
        await rm(join(bundle, 'big.bin'), { force: true });
        await execa('umount', [disk], { reject: false });
      }
    });
  }

  it('the board\'s sshd and its connections killed mid-deploy: E_DEPLOY_UNREACHABLE, old bundle intact, the next deploy resumes', async () => {
    const remote = join(work, 'killed', 'llava');
    await deploy(opts(remote));
    const before = await tree(remote);
    await writeFile(join(bundle, 'cut-a.bin'), randomBytes(1 << 20));
    await writeFile(join(bundle, 'cut-b.bin'), randomBytes(4 << 20));
    // After the first file lands, the server dies: its listener and every session (the control master's too).
    const listener = (await readFile(join(sshd.dir, 'sshd.pid'), 'utf8')).trim();
    let killed = false;
    const cut = () => {
      if (killed) return;
      killed = true;
      const kids = execFileSync('ps', ['--ppid', listener, '-o', 'pid=']).toString().split('\n').map((x) => x.trim()).filter(Boolean);
      for (const k of [...kids, listener]) process.kill(Number(k), 'SIGKILL');
    };
    const c = await codeOf(deploy(opts(remote, { ssh: { config: sshd.config, copy: 'scp' }, onFile: cut })));
    expect(killed).toBe(true);
    expect(c).toBe('E_DEPLOY_UNREACHABLE');
    expect(await tree(remote)).toEqual(before);
    // The board is back (a new sshd, new port): the files sent before the cut are not sent again.
    const dead = sshd;
    sshd = await startSshd();
    await rm(dead.dir, { recursive: true, force: true }); // its sshd is gone (SIGKILL): nothing to stop
    const r = await deploy(opts(remote, { ssh: { config: sshd.config, copy: 'scp' } }));
    expect(r.verified).toBe(true);
    expect(r.resumed.length).toBeGreaterThanOrEqual(1);
    expect([...r.resumed, ...r.transferred].sort()).toEqual(['cut-a.bin', 'cut-b.bin']);
    expect(await tree(remote)).toEqual(await tree(bundle));
    await Promise.all(['cut-a.bin', 'cut-b.bin'].map((f) => rm(join(bundle, f))));
  });

  it('two deploys racing to one path: the target is always one whole bundle, and a third deploy completes', async () => {
    const remote = join(work, 'race', 'llava');
    await writeFile(join(bundle, 'race.bin'), randomBytes(8 << 20));
    const results = await Promise.all([codeOf(deploy(opts(remote))), codeOf(deploy(opts(remote)))]);
    // At least one wins; a loser fails with one clear code, never a half bundle.
    expect(results).toContain('resolved');
    for (const c of results) expect(['resolved', 'E_DEPLOY_BUSY']).toContain(c);
    expect(await tree(remote)).toEqual(await tree(bundle));
    const r = await deploy(opts(remote));
    expect(r.verified).toBe(true);
    expect(await tree(remote)).toEqual(await tree(bundle));
    expect(await readdir(join(remote, '..'))).toEqual(['llava']);
    await rm(join(bundle, 'race.bin'));
  });
});
