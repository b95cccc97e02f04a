/**
 * The ssh transport: the system's OpenSSH client (`ssh`, `scp`) and rsync when both ends have it.
 *
 * Host keys stay checked: nothing here turns StrictHostKeyChecking off. The user's ~/.ssh/config,
 * agent and known_hosts apply unless `--ssh-config` / `--known-hosts` / `--identity` say otherwise.
 * BatchMode=yes: no password or host-key prompt can hang a deploy (key auth, as boards are set up with
 * `ssh-copy-id`). Failures are classified from ssh's exit status 255 and its stderr into one error each.
 *
 * One TCP connection and key exchange serves the whole deploy (probe, staging, copies, verify): the first
 * ssh becomes a control master (ControlMaster=auto, socket in a private temp folder, ControlPersist so
 * it outlives that first command) and `close()` ends it with `ssh -O exit`. A handshake costs ~0.5 s
 * even on loopback here, and more over a board's Wi-Fi.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { fail, type NanomindError } from '../errors.js';
import { shq, type Target } from './target.js';
import { run, wrapScript, type Command, type ExecOptions, type ExecResult, type PushFile, type PushOptions, type Transport } from './transport.js';

export interface SshOptions {
  /** Folder for the control-master socket (set by sshTransport; off when undefined). */
  readonly controlDir?: string;
  readonly identity?: string;
  readonly knownHosts?: string;
  /** An ssh_config file used instead of ~/.ssh/config (ssh -F). */
  readonly config?: string;
  readonly connectTimeout?: number;
  /** `auto` (default): rsync when both ends have it, else scp. */
  readonly copy?: 'auto' | 'rsync' | 'scp';
}

type SshTarget = Extract<Target, { kind: 'ssh' }>;

const SSH_HINT = 'install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)';

/** Options shared by ssh, scp and rsync's ssh (`-o Port=` works for all three). */
export function sshOptions(t: SshTarget, o: SshOptions): string[] {
  const a: string[] = [];
  if (o.config) a.push('-F', o.config);
  a.push('-o', 'BatchMode=yes', '-o', `ConnectTimeout=${o.connectTimeout ?? 10}`);
  if (o.identity) a.push('-i', o.identity, '-o', 'IdentitiesOnly=yes');
  if (o.knownHosts) a.push('-o', `UserKnownHostsFile=${o.knownHosts}`);
  if (t.port) a.push('-o', `Port=${t.port}`);
  if (t.user) a.push('-o', `User=${t.user}`);
  if (o.controlDir) a.push('-o', 'ControlMaster=auto', '-o', `ControlPath=${o.controlDir}/cm`, '-o', 'ControlPersist=60');
  return a;
}

/** `host:path` for scp and rsync, with IPv6 hosts in brackets. */
const remoteSpec = (t: SshTarget, path: string) => `${t.host.includes(':') ? `[${t.host}]` : t.host}:${path}`;

export function sshScriptCommand(t: SshTarget, o: SshOptions, script: string, args: readonly string[]): Command {
  return { file: 'ssh', args: [...sshOptions(t, o), '--', t.host, ['sh', '-s', '--', ...args.map(shq)].join(' ')], input: wrapScript(script) };
}

export function scpCommand(t: SshTarget, o: SshOptions, local: string, remote: string): Command {
  return { file: 'scp', args: ['-q', ...sshOptions(t, o), '--', local, remoteSpec(t, remote)] };
}

/**
 * One rsync for all files: `--files-from` keeps their relative paths, `--partial-dir` keeps a cut file's
 * bytes out of sight (not mistaken for a complete one) yet reused by the next run, `--out-format=%n`
 * names each file as it is sent (rsync prints these in batches, so they are progress, not proof:
 * the verify step is).
 */
export function rsyncCommand(t: SshTarget, o: SshOptions, localDir: string, destDir: string, rels: readonly string[]): Command {
  const rsh = ['ssh', ...sshOptions(t, o)].map((a) => (/[\s'"]/.test(a) ? `'${a}'` : a)).join(' ');
  return {
    file: 'rsync',
    args: ['--files-from=-', '--partial-dir=.rsync-partial', '--out-format=%n', '-e', rsh, `${localDir.replace(/\/+$/, '')}/`, `${remoteSpec(t, destDir)}/`],
    input: rels.join('\n') + '\n',
  };
}

/**
 * A file copied through the ssh channel itself, for boards whose ssh server has no SFTP (Dropbear on
 * Buildroot/OpenWrt images, OpenSSH without a `Subsystem sftp`), where OpenSSH 9's scp (SFTP underneath)
 * fails. Needs only `sh`, `cat` and `mv` there; the bytes land in `<dest>.part` and are renamed when
 * complete, so a cut stream never looks like a finished file (and verify's sha256 catches it anyway).
 */
export function streamCommand(t: SshTarget, o: SshOptions, local: string, remote: string): Command {
  return { file: 'ssh', args: [...sshOptions(t, o), '--', t.host, `cat > ${shq(`${remote}.part`)} && mv -f ${shq(`${remote}.part`)} ${shq(remote)}`], inputFile: local };
}

/** scp's failure when the server offers no SFTP subsystem (OpenSSH 9 scp speaks SFTP by default). */
export const noSftp = (r: ExecResult): boolean =>
  r.exitCode !== 0 && /subsystem request failed|sftp-server.*(not found|No such file)|^scp: Connection closed\s*$/im.test(r.stderr);

export function sshInteractiveCommand(t: SshTarget, o: SshOptions, argv: readonly string[]): Command {
  return { file: 'ssh', args: [...sshOptions(t, o), '-t', '--', t.host, argv.map(shq).join(' ')] };
}

/** Turns an ssh/scp/rsync failure into one clear error. */
export function classifySshFailure(t: SshTarget, r: ExecResult, what: string): NanomindError {
  const err = r.stderr.trim();
  const last = err.split('\n').filter(Boolean).slice(-3).join(' | ');
  const where = `${t.user ? `${t.user}@` : ''}${t.host}${t.port ? `:${t.port}` : ''}`;
  if (/Permission denied|Too many authentication failures|no mutual signature|Authentication failed/i.test(err))
    return fail('E_DEPLOY_AUTH', `ssh to ${where}: authentication failed (${last})`,
      { hint: 'copy your key to the board once (ssh-copy-id user@board), or pass --identity KEY' });
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key .* not known|No .* host key is known/i.test(err))
    return fail('E_DEPLOY_HOSTKEY', `ssh to ${where}: the host key is unknown or changed (${last})`,
      { hint: `connect once with plain ssh to check and accept the key, or pass --known-hosts FILE (ssh-keyscan${t.port ? ` -p ${t.port}` : ''} ${t.host} >> FILE after checking its fingerprint)` });
  if (/Connection refused|timed out|No route to host|Could not resolve hostname|Name or service not known|Network is unreachable|Connection closed by|Connection reset|kex_exchange_identification|Temporary failure in name resolution/i.test(err))
    return fail('E_DEPLOY_UNREACHABLE', `cannot reach ${where} (${last})`,
      { hint: 'check that the board is on, on the network, and runs sshd (and the port in --to)' });
  if (/No space left on device|Disk quota exceeded/i.test(err))
    return fail('E_DEPLOY_NO_SPACE', `${where}: no space left while ${what} (${last})`, { hint: 'free space on the board or deploy to another path' });
  return fail('E_DEPLOY_SSH', `${what} on ${where} failed (exit ${r.exitCode}): ${last || 'no message'}`);
}

/**
 * SFTP reports a full disk as a bare "Failure"; this asks the board whether `dir` has less than `bytes`
 * free (POSIX `df -Pk`), so the error can say what happened.
 */
async function outOfSpace(t: Transport, dir: string, bytes: number): Promise<boolean> {
  const r = await t.sh(`df -Pk "$1" | awk 'NR==2 {print $4}'`, [dir]).catch(() => undefined);
  const kb = Number(r?.stdout.trim());
  return !!r && r.stdout.trim() !== '' && Number.isFinite(kb) && kb * 1024 < bytes;
}

export function sshTransport(t: SshTarget, base: SshOptions = {}): Transport {
  let method: 'rsync' | 'scp' | 'ssh-stream' = 'scp';
  // Made on first use, in a short private path: unix socket paths are limited to ~100 bytes.
  let opts: SshOptions | undefined;
  const o = () => (opts ??= { ...base, controlDir: base.controlDir ?? mkdtempSync(join(tmpdir(), 'nm-ssh-')) });
  const self: Transport = {
    target: t,
    get method() { return method; },
    async sh(script, args, x: ExecOptions = {}) {
      const r = await run(sshScriptCommand(t, o(), script, args), { ...x, missing: SSH_HINT });
      if (r.exitCode === 255) throw classifySshFailure(t, r, 'running a command');
      return r;
    },
    async useMethod(remoteHasRsync) {
      const want = base.copy ?? 'auto';
      if (want === 'scp') { method = 'scp'; return; }
      const local = await execa('rsync', ['--version'], { reject: false });
      const ok = !local.failed && remoteHasRsync;
      if (want === 'rsync' && !ok)
        throw fail('E_DEPLOY_NO_TOOL', `--copy rsync: rsync is missing ${local.failed ? 'on this machine' : 'on the board'}`, { hint: 'install rsync there, or use --copy scp' });
      method = ok ? 'rsync' : 'scp';
    },
    async push(localDir, destDir, files: readonly PushFile[], x: PushOptions = {}) {
      if (!files.length) return;
      if (method === 'rsync') {
        const byRel = new Map(files.map((f) => [f.rel, f]));
        const r = await run(rsyncCommand(t, o(), localDir, destDir, files.map((f) => f.rel)), {
          signal: x.signal, missing: 'install rsync (apt-get install rsync) or use --copy scp',
          onStdout: (chunk) => { for (const line of chunk.split('\n')) { const f = byRel.get(line.trim()); if (f) x.onFile?.(f.rel, f.bytes); } },
        });
        if (r.exitCode !== 0) throw classifySshFailure(t, r, 'copying files with rsync');
        return;
      }
      for (const f of files) {
        const dest = `${destDir}/${f.rel}`;
        if (method === 'scp') {
          const r = await run(scpCommand(t, o(), f.local, dest), { signal: x.signal, missing: SSH_HINT });
          if (r.exitCode === 0) { x.onFile?.(f.rel, f.bytes); continue; }
          if (/^scp: write remote .*: Failure\s*$/m.test(r.stderr) && await outOfSpace(self, destDir, f.bytes))
            throw fail('E_DEPLOY_NO_SPACE', `${t.host}: the board ran out of space while copying ${f.rel} (${f.bytes} bytes) into ${destDir}`,
              { hint: 'free space on the board or deploy to a path on a bigger disk; files already sent are kept for the next deploy' });
          if (!noSftp(r)) throw classifySshFailure(t, r, `copying ${f.rel} with scp`);
          // No SFTP on the board: this file and the rest go through the ssh channel.
          method = 'ssh-stream';
        }
        const r = await run(streamCommand(t, o(), f.local, dest), { signal: x.signal, missing: SSH_HINT });
        if (r.exitCode !== 0) throw classifySshFailure(t, r, `copying ${f.rel} through ssh`);
        x.onFile?.(f.rel, f.bytes);
      }
    },
    interactive(argv) { return sshInteractiveCommand(t, base, argv); },
    async close() {
      if (!opts) return;
      await execa('ssh', [...sshOptions(t, opts), '-O', 'exit', '--', t.host], { reject: false });
      if (!base.controlDir) await rm(opts.controlDir!, { recursive: true, force: true });
      opts = undefined;
    },
  };
  return self;
}
