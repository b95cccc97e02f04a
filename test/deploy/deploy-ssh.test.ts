/**
 * `deploy` over a real OpenSSH server on 127.0.0.1 (test/deploy/sshd.ts). The "board" is this machine,
 * so the tests read the deployed folder directly and compare sha256s with the local bundle.
 * Skipped, with the reason printed, only when /usr/sbin/sshd is missing.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNanomindError, type NanomindError } from '../../src/errors.js';
import { deployVerb } from '../../src/cli/deploy.js';
import { deploy, type DeployOptions } from '../../src/deploy/index.js';
import { localVersion } from '../../src/deploy/runtime.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { tree } from './tree.js';
import { freePort, sshdMissing, startSshd, type TestSshd } from './sshd.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js');

async function caught(p: Promise<unknown>): Promise<NanomindError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (!isNanomindError(e)) throw new Error(`expected a NanomindError, got ${String(e)}`);
  return e;
}

if (sshdMissing) console.warn(`deploy ssh tests skipped: ${sshdMissing}`);
// rsync is optional (scp is the fallback); its tests run when it is installed here (the "board" is this machine).
const haveRsync = !(await execa('rsync', ['--version'], { reject: false })).failed;
if (!haveRsync) console.warn('deploy rsync tests skipped: rsync is not installed (apt-get install rsync)');

describe.skipIf(!!sshdMissing)('deploy over ssh to a local OpenSSH server', () => {
  let sshd: TestSshd;
  let work: string;
  let bundle: string;
  let remote: string;
  let to: string;
  const opts = (o: Partial<DeployOptions> = {}): DeployOptions =>
    ({ bundle, to, ssh: { config: sshd.config }, skipRuntime: true, ...o });

  beforeAll(async () => {
    [sshd, work] = await Promise.all([startSshd(), mkdtemp(join(tmpdir(), 'nanomind-deploy-'))]);
    bundle = join(work, 'bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bundle });
    await writeFile(join(bundle, 'extra.bin'), randomBytes(64 << 10));
    await mkdir(join(bundle, 'assets'));
    await writeFile(join(bundle, 'assets', 'old.txt'), 'to be removed\n');
    remote = join(work, 'board', 'opt', 'nanomind', 'llava');
    to = `ssh://${sshd.user}@127.0.0.1:${sshd.port}${remote}`;
  });

  afterAll(async () => {
    await sshd?.stop();
    await rm(work, { recursive: true, force: true });
    await cleanupFixtures();
  });

  it('first deploy: readiness, every file sent, verified, identical on the board', async () => {
    let rows: readonly { check: string; status: string }[] = [];
    const r = await deploy(opts({ onReadiness: (x) => { rows = x; } }));
    const local = await tree(bundle);
    expect(await tree(remote)).toEqual(local);
    expect([...r.transferred].sort()).toEqual(Object.keys(local).sort());
    expect(r.unchanged).toEqual([]);
    expect(r.verified).toBe(true);
    expect(r.kind).toBe('bricks');
    expect(r.method).toBe(haveRsync ? 'rsync' : 'scp');
    expect(r.readiness).toMatchObject({ arch: (await execa('uname', ['-m'])).stdout, node: process.version, live: 'absent', sha256sum: true, rsync: haveRsync, npu: '', librknnrt: '' });
    expect(r.readiness.freeBytes).toBeGreaterThan(0);
    expect(rows.map((x) => x.check)).toEqual(expect.arrayContaining(['Node.js', 'free space', 'NPU driver', 'librknnrt', 'GPU OpenCL', 'GPU Vulkan']));
    expect(r.runtime.action).toBe('skip');
    // Nothing but the bundle is left beside it.
    expect(await readdir(join(remote, '..'))).toEqual(['llava']);
  });

  it('re-deploy sends only changed files and drops removed ones', async () => {
    const same = await deploy(opts());
    expect(same.transferred).toEqual([]);
    expect(same.unchanged.length).toBe(Object.keys(await tree(bundle)).length);

    await writeFile(join(bundle, 'extra.bin'), randomBytes(64 << 10));
    await writeFile(join(bundle, 'assets', 'new.txt'), 'new\n');
    await rm(join(bundle, 'assets', 'old.txt'));
    const r = await deploy(opts({ ssh: { config: sshd.config, copy: 'scp' } }));
    expect(r.method).toBe('scp');
    expect([...r.transferred].sort()).toEqual(['assets/new.txt', 'extra.bin']);
    expect(r.bytesTransferred).toBe((64 << 10) + 4);
    expect(r.unchanged).not.toContain('extra.bin');
    expect(await tree(remote)).toEqual(await tree(bundle));
  });

  for (const copy of ['scp', 'rsync'] as const) {
    it.skipIf(copy === 'rsync' && !haveRsync)(`a deploy aborted mid-transfer (${copy}) leaves the old bundle in place; the next one resumes and verifies`, async () => {
      const before = await tree(remote);
      await writeFile(join(bundle, 'assets', `small-${copy}.txt`), `small ${copy}\n`);
      await writeFile(join(bundle, `big-${copy}.bin`), randomBytes(32 << 20));
      const ac = new AbortController();
      const e = await caught(deploy(opts({ ssh: { config: sshd.config, copy }, signal: ac.signal, onFile: () => ac.abort() })));
      expect(e.code).toBe('E_DEPLOY_ABORTED');
      expect(await tree(remote)).toEqual(before);
      const leftovers = (await readdir(join(remote, '..'))).filter((n) => n.includes('.staging-'));
      expect(leftovers.length).toBe(1);

      const r = await deploy(opts({ ssh: { config: sshd.config, copy } }));
      expect(r.verified).toBe(true);
      const local = await tree(bundle);
      expect([...r.unchanged].sort()).toEqual(Object.keys(local).filter((p) => before[p] === local[p]).sort());
      if (copy === 'scp') {
        // scp reports a file once it is complete: the first one is not sent again.
        expect(r.resumed).toEqual([`assets/small-${copy}.txt`]);
        expect(r.transferred).toEqual([`big-${copy}.bin`]);
      } else {
        // rsync names a file as it sends it, so the abort may land before the board renamed it into place.
        expect([...r.resumed, ...r.transferred].sort()).toEqual([`assets/small-${copy}.txt`, `big-${copy}.bin`]);
      }
      expect(await tree(remote)).toEqual(await tree(bundle));
      expect((await readdir(join(remote, '..'))).filter((n) => n !== 'llava')).toEqual([]);
      await rm(join(bundle, `big-${copy}.bin`));
    });
  }

  it('--run executes nanomind on the board and streams its output back', async () => {
    const chunks: string[] = [];
    const r = await deploy(opts({
      run: ['inspect', '{bundle}/embed_tokens.onnx', '--json'], remoteNanomind: ['node', BIN],
      onOutput: (stream, s) => { if (stream === 'stdout') chunks.push(s); },
    }));
    expect(r.run?.exitCode, JSON.stringify(r.run)).toBe(0);
    expect(r.run?.command.slice(-3)).toEqual(['inspect', `${remote}/embed_tokens.onnx`, '--json']);
    const report = JSON.parse(chunks.join(''));
    expect(report.files[0].inputs.map((i: { name: string }) => i.name)).toEqual(['input_ids']);
    expect(r.run?.stdout).toBe(chunks.join(''));
  });

  it('checks the installed runtime version instead of reinstalling it', async () => {
    const runtimeDir = join(work, 'runtime');
    await mkdir(join(runtimeDir, 'node_modules', 'nanomind'), { recursive: true });
    await writeFile(join(runtimeDir, 'node_modules', 'nanomind', 'package.json'), JSON.stringify({ name: 'nanomind', version: localVersion() }, null, 2));
    const r = await deploy(opts({ skipRuntime: false, runtimeDir }));
    expect(r.runtime).toEqual({ action: 'up-to-date', local: localVersion(), remote: localVersion() });
  });

  it('installs the runtime for real (npm pack + npm install --omit=dev on the board), then finds it up to date', async (ctx) => {
    const ping = await execa('npm', ['ping'], { reject: false, timeout: 15_000 });
    if (ping.failed) { console.warn(`real runtime install skipped: the npm registry is unreachable (${ping.stderr.split('\n')[0]})`); ctx.skip(); }
    const runtimeDir = join(work, 'real-runtime');
    const r = await deploy(opts({ skipRuntime: false, runtimeDir, run: ['--version'] }));
    expect(r.runtime).toEqual({ action: 'installed', local: localVersion(), remote: localVersion() });
    // --run used the installed runtime's own CLI (the default command, no override).
    expect(r.run?.command).toEqual(['node', `${runtimeDir}/node_modules/nanomind/bin/nanomind.js`, '--version']);
    expect(r.run?.stdout.trim()).toBe(localVersion());
    // The board got the runtime-only package: the CLI, dist, targets and the native kernels prebuilt for it (this
    // machine's build: the "board" is this machine), not models/ (14 MB), README or the kernel sources.
    const pkg = join(runtimeDir, 'node_modules', 'nanomind');
    expect((await readdir(pkg)).sort()).toEqual(['bin', 'dist', 'package.json', 'prebuilds', 'targets']);
    expect(r.notes).toContain(`native kernels for the board: copied for ${r.readiness.arch}`);
    const probe = await execa(process.execPath, ['--input-type=module', '-e',
      `import { loadKernels } from ${JSON.stringify(join(pkg, 'dist', 'run', 'backends', 'native', 'addon.js'))}; const k = loadKernels(); process.stdout.write(k.ok ? k.kernels.simd() : k.reason);`]);
    expect(['avx2', 'avx512vnni', 'neon-dotprod', 'neon', 'portable']).toContain(probe.stdout); // the installed runtime loads its prebuilt addon
    expect((await deploy(opts({ skipRuntime: false, runtimeDir }))).runtime.action).toBe('up-to-date');
  }, 180_000);

  it('the CLI verb prints the readiness table, then the result (text or --json)', async () => {
    const cli = async (...args: string[]) => {
      const program = new Command().exitOverride();
      deployVerb(program);
      const out: string[] = [];
      const err: string[] = [];
      const [w, e] = [process.stdout.write, process.stderr.write];
      process.stdout.write = ((s: string) => { out.push(s); return true; }) as typeof process.stdout.write;
      process.stderr.write = ((s: string) => { err.push(s); return true; }) as typeof process.stderr.write;
      try {
        await program.parseAsync(['node', 'nanomind', 'deploy', bundle, '--to', to, '--ssh-config', sshd.config, '--skip-runtime', ...args]);
      } finally {
        [process.stdout.write, process.stderr.write] = [w, e];
      }
      return { out: out.join(''), err: err.join('') };
    };
    await cli('--json');
    const json = JSON.parse((await cli('--json')).out);
    expect(json).toMatchObject({ target: to, transferred: [], verified: true });
    expect(json.unchanged.length).toBe(Object.keys(await tree(bundle)).length);
    const text = await cli('--copy', 'scp');
    expect(text.err).toMatch(/^board check +value/m);
    expect(text.err).toMatch(/^Node\.js +v\d+/m);
    expect(text.out).toMatch(/verified: every file matches/);
  });

  it('puts back a bundle left renamed by a deploy interrupted between its two renames', async () => {
    const before = await tree(remote);
    await rename(remote, `${remote}.old-test`);
    const r = await deploy(opts());
    expect(r.notes.join('\n')).toContain('.old-test');
    expect(r.transferred).toEqual([]);
    expect(await tree(remote)).toEqual(before);
  });

  it('wrong key → E_DEPLOY_AUTH; closed port → E_DEPLOY_UNREACHABLE; unknown host key → E_DEPLOY_HOSTKEY', async () => {
    const explicit = { config: '/dev/null', knownHosts: sshd.knownHosts };
    // The explicit-flags path (--identity, --known-hosts, no ssh config) works with the right key…
    expect((await deploy(opts({ ssh: { ...explicit, identity: sshd.identity } }))).verified).toBe(true);
    expect((await caught(deploy(opts({ ssh: { ...explicit, identity: sshd.wrongIdentity } })))).code).toBe('E_DEPLOY_AUTH');
    const closed = `ssh://${sshd.user}@127.0.0.1:${await freePort()}${remote}`;
    expect((await caught(deploy(opts({ to: closed })))).code).toBe('E_DEPLOY_UNREACHABLE');
    const empty = join(work, 'empty_known_hosts');
    await writeFile(empty, '');
    expect((await caught(deploy(opts({ ssh: { ...explicit, identity: sshd.identity, knownHosts: empty } })))).code).toBe('E_DEPLOY_HOSTKEY');
  });

  it('not enough free space → E_DEPLOY_NO_SPACE before anything is sent', async () => {
    const fresh = `ssh://${sshd.user}@127.0.0.1:${sshd.port}${join(work, 'board2', 'llava')}`;
    const e = await caught(deploy(opts({ to: fresh, probeFreeKb: 1 })));
    expect(e.code).toBe('E_DEPLOY_NO_SPACE');
    expect(await readdir(join(work, 'board2')).catch(() => [])).toEqual([]);
  });

  it('refuses to replace a folder that is not a bundle', async () => {
    const other = join(work, 'home-like');
    await mkdir(other, { recursive: true });
    await writeFile(join(other, 'precious.txt'), 'keep me\n');
    const e = await caught(deploy(opts({ to: `ssh://${sshd.user}@127.0.0.1:${sshd.port}${other}` })));
    expect(e.code).toBe('E_DEPLOY_TARGET_OCCUPIED');
    expect(await readFile(join(other, 'precious.txt'), 'utf8')).toBe('keep me\n');
  });
});
