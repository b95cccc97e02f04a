/**
 * Boards whose ssh server has no SFTP: Debian's Dropbear (test/deploy/dropbear.ts) and an OpenSSH sshd
 * with no `Subsystem sftp` (test/deploy/sshd.ts). OpenSSH 9's scp fails against both ("subsystem request
 * failed" / "Connection closed"); deploy must notice and send the files through the ssh channel.
 * Oracle: the sha256 of every file read back from the board's disk (this machine) vs the local bundle.
 * Skipped with the reason printed when sshd or (for Dropbear) root / dropbear are missing; CI has all.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/deploy/index.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { tree } from './tree.js';
import { dropbearMissing, startDropbear, type TestDropbear } from './dropbear.js';
import { sshdMissing, startSshd, type TestSshd } from './sshd.js';


if (sshdMissing) console.warn(`no-sftp sshd tests skipped: ${sshdMissing}`);
if (dropbearMissing) console.warn(`Dropbear deploy tests skipped: ${dropbearMissing}`);

let work: string;
let bundle: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-nosftp-'));
  bundle = join(work, 'bricks');
  await partition({ input: (await fixtureDir('llava')).dir, out: bundle });
  await writeFile(join(bundle, 'extra.bin'), randomBytes(256 << 10));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
  await cleanupFixtures();
});

describe.skipIf(!!sshdMissing)('OpenSSH sshd without an sftp subsystem', () => {
  let sshd: TestSshd;
  beforeAll(async () => { sshd = await startSshd({ sftp: false }); });
  afterAll(async () => { await sshd?.stop(); });

  it('plain scp really fails there (the premise), and deploy falls back to the ssh channel', async () => {
    const probe = await execa('scp', ['-F', sshd.config, '-P', String(sshd.port), join(bundle, 'extra.bin'), `${sshd.user}@127.0.0.1:${join(work, 'scp-probe')}`], { reject: false });
    expect(probe.exitCode).not.toBe(0);
    const remote = join(work, 'board-openssh', 'llava');
    const r = await deploy({ bundle, to: `ssh://${sshd.user}@127.0.0.1:${sshd.port}${remote}`, ssh: { config: sshd.config, copy: 'scp' }, skipRuntime: true });
    expect(r.method).toBe('ssh-stream');
    expect(r.verified).toBe(true);
    expect(await tree(remote)).toEqual(await tree(bundle));
  });
});

describe.skipIf(!!dropbearMissing)('Dropbear (no SFTP), as on Buildroot / OpenWrt boards', () => {
  let db: TestDropbear;
  beforeAll(async () => { db = await startDropbear(); });
  afterAll(async () => { await db?.stop(); });

  it('deploys, verifies and re-deploys only a changed file; host key checked with --known-hosts', async () => {
    const remote = join(work, 'board-dropbear', 'llava');
    const to = `ssh://root@127.0.0.1:${db.port}${remote}`;
    const ssh = { identity: db.identity, knownHosts: db.knownHosts, copy: 'scp' as const };
    const premise = await execa('scp', ['-i', db.identity, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${db.knownHosts}`, '-o', 'BatchMode=yes',
      '-P', String(db.port), join(bundle, 'extra.bin'), `root@127.0.0.1:${join(work, 'scp-probe-db')}`], { reject: false });
    expect(premise.exitCode).not.toBe(0);
    const first = await deploy({ bundle, to, ssh, skipRuntime: true });
    expect(first.method).toBe('ssh-stream');
    expect(first.verified).toBe(true);
    expect(await tree(remote)).toEqual(await tree(bundle));
    expect(await readdir(join(remote, '..'))).toEqual(['llava']);

    await writeFile(join(bundle, 'extra.bin'), randomBytes(256 << 10));
    const again = await deploy({ bundle, to, ssh, skipRuntime: true });
    expect(again.transferred).toEqual(['extra.bin']);
    expect(await tree(remote)).toEqual(await tree(bundle));

    // A wrong host key is refused, not accepted: Dropbear's key is checked like OpenSSH's.
    await writeFile(join(work, 'wrong_known_hosts'), (await readFile(db.knownHosts, 'utf8')).replace(/ssh-ed25519 \S+/, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKsVh1bzWQ6rq8m4m3bHk0c7mJ7xJ9v1m4Q2aX9rXc0k'));
    const bad = await deploy({ bundle, to, ssh: { ...ssh, knownHosts: join(work, 'wrong_known_hosts') }, skipRuntime: true }).then(() => 'resolved', (e: { code?: string }) => e.code);
    expect(bad).toBe('E_DEPLOY_HOSTKEY');
  });
});
