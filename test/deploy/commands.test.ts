/**
 * Deploy pieces without a board: target parsing, the ssh / scp / rsync / adb command lines, failure
 * classification, the probe script run by the local sh and its parser, the sync plan, the runtime
 * install script (with a fake npm), and a whole adb deploy through a fake `adb` that maps onto a local
 * folder. The adb transport has not been run against a real device.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adbInteractiveCommand, adbPushCommand, adbShellScriptCommand, adbTransport, classifyAdbFailure } from '../../src/deploy/adb.js';
import { deploy, parseTarget } from '../../src/deploy/index.js';
import { loadDeployable } from '../../src/deploy/local.js';
import { parseProbe, PROBE_SCRIPT, readinessRows } from '../../src/deploy/probe.js';
import { expandArgs, remoteArgv } from '../../src/deploy/remote.js';
import { INSTALL_SCRIPT, localVersion, packCommand, PACKAGE_ROOT, remoteNanomindCommand, runtimeAction } from '../../src/deploy/runtime.js';
import { classifySshFailure, rsyncCommand, scpCommand, sshInteractiveCommand, sshOptions, sshScriptCommand } from '../../src/deploy/ssh.js';
import { planSync, type LocalFile } from '../../src/deploy/sync.js';
import { shq } from '../../src/deploy/target.js';
import { wrapScript } from '../../src/deploy/transport.js';
import { isNanomindError } from '../../src/errors.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';

const code = (f: () => unknown) => { try { f(); return 'ok'; } catch (e) { return isNanomindError(e) ? e.code : String(e); } };
const ssh = (url: string) => parseTarget(url) as Extract<ReturnType<typeof parseTarget>, { kind: 'ssh' }>;
const adb = (url: string) => parseTarget(url) as Extract<ReturnType<typeof parseTarget>, { kind: 'adb' }>;

let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-deploy-cmd-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

describe('targets', () => {
  it('parses ssh and adb URLs', () => {
    expect(parseTarget('ssh://orangepi@opi5.local/opt/nanomind/llava')).toEqual({ kind: 'ssh', url: 'ssh://orangepi@opi5.local/opt/nanomind/llava', user: 'orangepi', host: 'opi5.local', port: undefined, path: '/opt/nanomind/llava' });
    expect(parseTarget('ssh://rock@10.0.0.5:2222/~/models/llava/')).toMatchObject({ user: 'rock', host: '10.0.0.5', port: 2222, path: 'models/llava' });
    expect(parseTarget('ssh://[fe80::1]:22/opt/x')).toMatchObject({ host: 'fe80::1', port: 22, user: undefined });
    expect(parseTarget('adb://0123456789ABCDEF/data/local/tmp/nanomind')).toMatchObject({ kind: 'adb', serial: '0123456789ABCDEF', path: '/data/local/tmp/nanomind' });
    expect(parseTarget('adb://192.168.1.20:5555/sdcard/nm')).toMatchObject({ serial: '192.168.1.20:5555' });
  });

  it('rejects URLs and paths deploy must not touch', () => {
    for (const bad of ['ftp://h/x', 'ssh://h', 'ssh://h/', 'ssh://h/opt/../etc', 'ssh://h/opt/a b', "ssh://h/opt/x'y", 'adb://S/~/x', 'ssh://h/~/'])
      expect(code(() => parseTarget(bad)), bad).toBe('E_USAGE');
  });

  it('quotes shell words', async () => {
    expect(shq('plain/path-1.onnx')).toBe('plain/path-1.onnx');
    const odd = "it's $HOME `x` \"q\" \\";
    const r = await execa('sh', ['-c', `printf %s ${shq(odd)}`]);
    expect(r.stdout).toBe(odd);
  });
});

describe('ssh command lines', () => {
  const t = ssh('ssh://orangepi@opi5.local:2222/opt/nm');
  it('keeps host-key checking on and passes identity, known_hosts, port and user as options', () => {
    const a = sshOptions(t, { identity: '/k/id_ed25519', knownHosts: '/k/known_hosts', config: '/k/cfg' });
    expect(a).toEqual(['-F', '/k/cfg', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-i', '/k/id_ed25519', '-o', 'IdentitiesOnly=yes',
      '-o', 'UserKnownHostsFile=/k/known_hosts', '-o', 'Port=2222', '-o', 'User=orangepi']);
    expect(a.join(' ')).not.toMatch(/StrictHostKeyChecking/);
    const s = sshScriptCommand(t, {}, 'echo "$1"', ['a b', "c'd"]);
    expect(s.args.slice(-3)).toEqual(['--', 'opi5.local', `sh -s -- 'a b' 'c'\\''d'`]);
    expect(s.input).toBe(wrapScript('echo "$1"'));
    expect(sshInteractiveCommand(t, {}, ['node', 'x.js', 'chat', '/opt/nm']).args.slice(-4)).toEqual(['-t', '--', 'opi5.local', 'node x.js chat /opt/nm']);
  });

  it('scp and rsync name the remote side host:path (IPv6 in brackets) and rsync reads the file list from stdin', () => {
    expect(scpCommand(t, {}, '/b/x.onnx', '/opt/nm.staging-1/x.onnx').args.slice(-3)).toEqual(['--', '/b/x.onnx', 'opi5.local:/opt/nm.staging-1/x.onnx']);
    expect(scpCommand(ssh('ssh://[::1]/opt/nm'), {}, '/b/x', '/opt/y').args.at(-1)).toBe('[::1]:/opt/y');
    const r = rsyncCommand(t, { identity: '/my keys/id' }, '/b/', 'nm.staging-1', ['a.onnx', 'sub/b.json']);
    expect(r.args).toEqual(['--files-from=-', '--partial-dir=.rsync-partial', '--out-format=%n', '-e',
      "ssh -o BatchMode=yes -o ConnectTimeout=10 -i '/my keys/id' -o IdentitiesOnly=yes -o Port=2222 -o User=orangepi", '/b/', 'opi5.local:nm.staging-1/']);
    expect(r.input).toBe('a.onnx\nsub/b.json\n');
  });

  it('turns ssh failures into one error code each', () => {
    const c = (stderr: string) => classifySshFailure(t, { stdout: '', stderr, exitCode: 255 }, 'x').code;
    expect(c('orangepi@opi5.local: Permission denied (publickey).')).toBe('E_DEPLOY_AUTH');
    expect(c('ssh: connect to host opi5.local port 2222: Connection refused')).toBe('E_DEPLOY_UNREACHABLE');
    expect(c('ssh: Could not resolve hostname opi5.local: Name or service not known')).toBe('E_DEPLOY_UNREACHABLE');
    expect(c('ssh: connect to host 10.0.0.9 port 22: Connection timed out')).toBe('E_DEPLOY_UNREACHABLE');
    expect(c('No ED25519 host key is known for [opi5.local]:2222 and you have requested strict checking.\nHost key verification failed.')).toBe('E_DEPLOY_HOSTKEY');
    expect(c('@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @')).toBe('E_DEPLOY_HOSTKEY');
    expect(c('scp: write remote "/opt/nm/x": No space left on device')).toBe('E_DEPLOY_NO_SPACE');
    expect(c('something else')).toBe('E_DEPLOY_SSH');
  });
});

describe('adb command lines (not run against a device)', () => {
  const t = adb('adb://0123ABCD/data/local/tmp/nm');
  it('pushes and runs scripts through adb -s SERIAL', () => {
    expect(adbPushCommand(t, '/b/x.onnx', '/data/local/tmp/nm.staging-1/x.onnx')).toEqual({ file: 'adb', args: ['-s', '0123ABCD', 'push', '/b/x.onnx', '/data/local/tmp/nm.staging-1/x.onnx'] });
    expect(adbShellScriptCommand(t, '/data/local/tmp/s.sh', ['/data/local/tmp/nm', 'a b']).args)
      .toEqual(['-s', '0123ABCD', 'shell', "sh /data/local/tmp/s.sh /data/local/tmp/nm 'a b'; s=$?; rm -f /data/local/tmp/s.sh; exit $s"]);
    expect(adbInteractiveCommand(t, ['node', 'nm.js', 'chat']).args).toEqual(['-s', '0123ABCD', 'shell', '-t', 'node nm.js chat']);
    const c = (stderr: string) => classifyAdbFailure(t, { stdout: '', stderr, exitCode: 1 }, 'x').code;
    expect(c("adb: device '0123ABCD' not found")).toBe('E_DEPLOY_UNREACHABLE');
    expect(c('adb: device unauthorized.')).toBe('E_DEPLOY_AUTH');
  });
});

describe('probe', () => {
  it('the script runs in the local sh and reports this machine', async () => {
    const path = join(work, 'not-yet', 'llava');
    const r = await execa('sh', ['-s', '--', path, join(work, 'rt')], { input: wrapScript(`NANOMIND_PROBE_FREE_KB=123\n${PROBE_SCRIPT}`) });
    const { readiness, state } = parseProbe(r.stdout);
    expect(readiness).toMatchObject({ arch: (await execa('uname', ['-m'])).stdout, node: process.version, freeBytes: 123 * 1024, live: 'absent', sha256sum: true, runtime: '' });
    expect(state.live.size).toBe(0);
  });

  it('parses an RK3588 report (values as Rockchip images print them) and the sha256 listings', () => {
    const sha = (c: string) => c.repeat(64);
    const out = [
      'arch=aarch64', 'kernel=6.1.43-rockchip-rk3588', 'os=Ubuntu 22.04.4 LTS', 'model=Orange Pi 5', 'node=v20.18.0', 'npm=/usr/bin/npm',
      'free_kb=52428800', 'npu=RKNPU driver: v0.9.8', 'librknnrt=/usr/lib/librknnrt.so', 'opencl=/etc/OpenCL/vendors/mali.icd', 'vulkan=',
      'mali=/dev/mali0', 'rsync=/usr/bin/rsync', 'sha256sum=/usr/bin/sha256sum', 'runtime=0.1.0', 'home=/home/orangepi', 'live=bundle',
      `live ${sha('a')}  ./bundle.json`, `live ${sha('b')}  ./sub/x.onnx`, `staging:llava.staging-k1 ${sha('c')}  ./x.onnx`,
    ].join('\n');
    const { readiness, state } = parseProbe(out);
    expect(readiness).toMatchObject({ arch: 'aarch64', npu: 'rknpu 0.9.8', freeBytes: 52428800 * 1024, librknnrt: '/usr/lib/librknnrt.so', rsync: true, live: 'bundle', runtime: '0.1.0' });
    expect([...state.live]).toEqual([['bundle.json', sha('a')], ['sub/x.onnx', sha('b')]]);
    expect(state.staging).toEqual([{ name: 'llava.staging-k1', files: new Map([['x.onnx', sha('c')]]) }]);
    // dmesg form, as the script's grep extracts it
    expect(parseProbe('arch=aarch64\nlive=absent\nnpu=rknpu 0.9.6').readiness.npu).toBe('rknpu 0.9.6');
    const rows = readinessRows(readiness, { needBytes: 1 << 30 });
    expect(rows.find((r) => r.check === 'free space')?.status).toBe('ok');
    expect(rows.find((r) => r.check === 'GPU Vulkan')?.status).toBe('warn');
    expect(code(() => parseProbe('garbage'))).toBe('E_DEPLOY_BOARD');
  });
});

describe('what can be deployed', () => {
  it('a brick set (bricks.json) or a bundle (bundle.json), each checked by its own reader', async () => {
    const bricks = join(work, 'deployable-bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bricks });
    await writeFile(join(bricks, '.DS_Store'), 'x');
    const d = await loadDeployable(bricks);
    expect(d.kind).toBe('bricks');
    expect(d.files.map((f) => f.rel)).toContain('bricks.json');
    expect(d.files.map((f) => f.rel)).not.toContain('.DS_Store');
    const none = join(work, 'not-a-bundle');
    await mkdir(none, { recursive: true });
    expect(await loadDeployable(none).catch((e: { code: string }) => e.code)).toBe('E_DEPLOY_NOT_BUNDLE');
    const badBundle = join(work, 'bad-bundle');
    await mkdir(badBundle, { recursive: true });
    await writeFile(join(badBundle, 'bundle.json'), '{"format":"nanomind.bundle","version":1}');
    expect(await loadDeployable(badBundle).catch((e: { code: string }) => e.code)).toBe('E_BUNDLE_INVALID');
  });
});

describe('sync plan', () => {
  const f = (rel: string, c: string, bytes = 10): LocalFile => ({ rel, abs: `/b/${rel}`, bytes, sha256: c.repeat(64) });
  it('links what the live bundle has, keeps what an interrupted staging has, sends the rest', () => {
    const local = [f('a', '1'), f('b', '2', 100), f('c', '3', 1000), f('d', '4')];
    const plan = planSync(local, {
      live: new Map([['a', '1'.repeat(64)], ['b', '9'.repeat(64)]]),
      staging: [
        { name: 'm.staging-old', files: new Map([['z', '0'.repeat(64)]]) },
        { name: 'm.staging-x', files: new Map([['c', '3'.repeat(64)], ['a', '1'.repeat(64)], ['stale', '5'.repeat(64)]]) },
      ],
    }, '/opt/m', 'new');
    expect(plan.staging).toBe('m.staging-new');
    expect(plan.adopt).toBe('m.staging-x');
    expect(plan.drop).toEqual(['m.staging-old']);
    expect(plan.keep.map((x) => x.rel)).toEqual(['a', 'c']);
    expect(plan.link.map((x) => x.rel)).toEqual([]);
    expect(plan.send.map((x) => x.rel)).toEqual(['b', 'd']);
    expect(plan.remove).toEqual(['stale']);
    expect(plan.sendBytes).toBe(110);
  });
});

describe('runtime', () => {
  it('installs only when the board has another version (or none)', () => {
    expect(runtimeAction('0.1.0', '0.1.0', false)).toBe('up-to-date');
    expect(runtimeAction('', '0.1.0', false)).toBe('install');
    expect(runtimeAction('0.0.9', '0.1.0', false)).toBe('install');
    expect(runtimeAction('', '0.1.0', true)).toBe('skip');
    expect(remoteNanomindCommand('.nanomind/runtime')).toEqual(['node', '.nanomind/runtime/node_modules/nanomind/bin/nanomind.js']);
    expect(remoteArgv(['run', '{bundle}', '--prompt', 'hi'], '/opt/nm')).toEqual(['node', '.nanomind/runtime/node_modules/nanomind/bin/nanomind.js', 'run', '/opt/nm', '--prompt', 'hi']);
    expect(expandArgs(['{bundle}/x.onnx'], 'b')).toEqual(['b/x.onnx']);
  });

  it('npm pack of this package holds the CLI entry and the compiled code', async () => {
    const cmd = packCommand(PACKAGE_ROOT, work);
    expect(cmd.args).toEqual(['pack', '--ignore-scripts', '--json', '--pack-destination', work]);
    const r = await execa(cmd.file, [...cmd.args, '--dry-run'], { cwd: cmd.cwd });
    const [pack] = JSON.parse(r.stdout) as { name: string; version: string; files: { path: string }[] }[];
    expect(pack.name).toBe('nanomind');
    expect(pack.version).toBe(localVersion());
    const paths = pack.files.map((x) => x.path);
    expect(paths).toEqual(expect.arrayContaining(['bin/nanomind.js', 'package.json', 'dist/cli/main.js']));
  });

  it('the install script runs npm install --omit=dev in the runtime folder and reports the version (fake npm)', async () => {
    const bin = join(work, 'fake-bin');
    const rt = join(work, 'rt');
    await mkdir(bin, { recursive: true });
    await mkdir(rt, { recursive: true });
    await writeFile(join(rt, 'nanomind-0.1.0.tgz'), 'tarball');
    await writeFile(join(bin, 'npm'), '#!/bin/sh\necho "$@" > npm-args.txt\nmkdir -p node_modules/nanomind\necho \'{"version":"0.1.0"}\' > node_modules/nanomind/package.json\n');
    await chmod(join(bin, 'npm'), 0o755);
    const r = await execa('sh', ['-s', '--', rt, 'nanomind-0.1.0.tgz'], { input: wrapScript(INSTALL_SCRIPT), env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(r.stdout).toMatch(/^installed=0\.1\.0$/m);
    expect((await readFile(join(rt, 'npm-args.txt'), 'utf8')).trim()).toBe('install --omit=dev --no-audit --no-fund --loglevel=error ./nanomind-0.1.0.tgz');
    expect(JSON.parse(await readFile(join(rt, 'package.json'), 'utf8'))).toMatchObject({ private: true });
  });
});

describe('adb deploy through a fake adb (maps the device onto a local folder)', () => {
  it('stages, verifies and swaps like the ssh path', async () => {
    const bin = join(work, 'adb-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'adb'), [
      '#!/bin/sh', '[ "$1" = -s ] || exit 2', 'shift 2', 'echo "$*" >> "$(dirname "$0")/calls.txt"',
      'case $1 in', '  push) cp "$2" "$3" ;;', '  shell) shift; [ "$1" = -t ] && shift; exec sh -c "$1" ;;', '  *) exit 2 ;;', 'esac', '',
    ].join('\n'));
    await chmod(join(bin, 'adb'), 0o755);
    const bundle = join(work, 'bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bundle });
    const device = join(work, 'device');
    await mkdir(join(device, 'tmp'), { recursive: true });
    const to = `adb://FAKE01${device}/nanomind/llava`;
    const saved = process.env.PATH;
    process.env.PATH = `${bin}:${saved}`;
    try {
      const r = await deploy({ bundle, to, skipRuntime: true, transport: adbTransport(adb(to), { tmpDir: join(device, 'tmp') }) });
      expect(r.verified).toBe(true);
      expect(r.method).toBe('adb push');
      expect(r.unchanged).toEqual([]);
      expect(r.transferred).toContain('decoder_model_merged.onnx');
      expect(await readFile(join(device, 'nanomind', 'llava', 'bricks.json'), 'utf8')).toBe(await readFile(join(bundle, 'bricks.json'), 'utf8'));
      const again = await deploy({ bundle, to, skipRuntime: true, transport: adbTransport(adb(to), { tmpDir: join(device, 'tmp') }) });
      expect(again.transferred).toEqual([]);
    } finally {
      process.env.PATH = saved;
    }
    const calls = await readFile(join(bin, 'calls.txt'), 'utf8');
    expect(calls).toMatch(/^push .*bricks\.json .*\/nanomind\/llava\.staging-[\w-]+\/bricks\.json$/m);
  });
});
