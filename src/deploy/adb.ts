/**
 * The adb transport (Android images of RK3588 boards): `adb -s SERIAL push` and `adb -s SERIAL shell`.
 * Scripts are pushed to /data/local/tmp and run from there, since old adb versions cut long
 * `adb shell` command lines and do not forward stdin. Not run against a device in this project's tests
 * (only the command construction is tested).
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fail, type NanomindError } from '../errors.js';
import { shq, type Target } from './target.js';
import { run, type Command, type ExecResult, type PushFile, type PushOptions, type Transport } from './transport.js';
import { makeTemp, removeTemp } from '../util/temp.js';

type AdbTarget = Extract<Target, { kind: 'adb' }>;

const ADB_HINT = 'install Android platform-tools (Debian/Ubuntu: apt-get install adb)';
export const ADB_TMP = '/data/local/tmp';

export const adbPushCommand = (t: AdbTarget, local: string, remote: string): Command =>
  ({ file: 'adb', args: ['-s', t.serial, 'push', local, remote] });

/** Runs a pushed script and removes it, keeping its exit status. */
export const adbShellScriptCommand = (t: AdbTarget, remoteScript: string, args: readonly string[]): Command =>
  ({ file: 'adb', args: ['-s', t.serial, 'shell', `sh ${shq(remoteScript)} ${args.map(shq).join(' ')}; s=$?; rm -f ${shq(remoteScript)}; exit $s`] });

export const adbInteractiveCommand = (t: AdbTarget, argv: readonly string[]): Command =>
  ({ file: 'adb', args: ['-s', t.serial, 'shell', '-t', argv.map(shq).join(' ')] });

export function classifyAdbFailure(t: AdbTarget, r: ExecResult, what: string): NanomindError {
  const err = `${r.stderr}\n${r.stdout}`.trim();
  const last = err.split('\n').filter(Boolean).slice(-2).join(' | ');
  if (/unauthorized/i.test(err))
    return fail('E_DEPLOY_AUTH', `adb device ${t.serial} is unauthorized (${last})`, { hint: 'unlock the device and accept the USB debugging prompt, then retry' });
  if (/not found|no devices|offline|cannot connect|failed to connect|no emulators/i.test(err))
    return fail('E_DEPLOY_UNREACHABLE', `adb device ${t.serial} is not reachable (${last})`, { hint: 'check `adb devices` lists it (adb connect HOST:PORT for network adb)' });
  if (/No space left on device/i.test(err))
    return fail('E_DEPLOY_NO_SPACE', `adb device ${t.serial}: no space left while ${what}`, { hint: 'free space on the device or deploy to another path' });
  return fail('E_DEPLOY_ADB', `${what} on adb device ${t.serial} failed (exit ${r.exitCode}): ${last || 'no message'}`);
}

/** `tmpDir`: where scripts are pushed on the device (default /data/local/tmp). */
export function adbTransport(t: AdbTarget, o: { tmpDir?: string } = {}): Transport {
  return {
    target: t,
    method: 'adb push',
    async sh(script, args, x = {}) {
      const dir = await makeTemp('adb');
      const remote = `${o.tmpDir ?? ADB_TMP}/nanomind-${randomBytes(4).toString('hex')}.sh`;
      try {
        await writeFile(join(dir, 'script.sh'), script);
        const p = await run(adbPushCommand(t, join(dir, 'script.sh'), remote), { signal: x.signal, missing: ADB_HINT });
        if (p.exitCode !== 0) throw classifyAdbFailure(t, p, 'pushing a script');
        return await run(adbShellScriptCommand(t, remote, args), { ...x, missing: ADB_HINT });
      } finally {
        await removeTemp(dir);
      }
    },
    async useMethod() {},
    async push(_localDir, destDir, files: readonly PushFile[], x: PushOptions = {}) {
      for (const f of files) {
        const r = await run(adbPushCommand(t, f.local, `${destDir}/${f.rel}`), { signal: x.signal, missing: ADB_HINT });
        if (r.exitCode !== 0) throw classifyAdbFailure(t, r, `pushing ${f.rel}`);
        x.onFile?.(f.rel, f.bytes);
      }
    },
    interactive(argv) { return adbInteractiveCommand(t, argv); },
    async close() {},
  };
}
