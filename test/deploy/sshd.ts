/**
 * A real OpenSSH server for the deploy tests: `/usr/sbin/sshd -D -e` on 127.0.0.1 and a random high
 * port, run as the current user with throw-away host and user keys in a temp folder, public-key auth
 * only. The client side gets a known_hosts file holding the host key and an ssh_config that points at
 * both, so the user's own ~/.ssh is never read or written. Host-key checking stays on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';

export const SSHD = '/usr/sbin/sshd';
export const sshdMissing = !existsSync(SSHD) ? `${SSHD} is missing (apt-get install openssh-server)` : undefined;

export interface TestSshd {
  readonly dir: string;
  readonly port: number;
  readonly user: string;
  /** Private key accepted by the server. */
  readonly identity: string;
  /** A private key the server does not know. */
  readonly wrongIdentity: string;
  readonly knownHosts: string;
  /** ssh_config with IdentityFile, UserKnownHostsFile, IdentitiesOnly: use as `-F`. */
  readonly config: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((ok) => srv.close(() => ok()));
  return port;
}

export async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}: ${log()}`);
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); res(true); });
      s.once('error', () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on ${port}: ${log()}`);
}

/**
 * `sftp: false`: no `Subsystem sftp` line, as on stripped-down boards (OpenSSH 9's scp then fails).
 * `pathPrefix`: a folder searched first on the board's PATH (e.g. one holding an old `node`).
 */
/** Stops a test server (SIGTERM, waits for its exit) and removes its folder. */
export async function stopServer(child: ChildProcess, dir: string): Promise<void> {
  if (child.exitCode === null) {
    const exited = new Promise((ok) => child.once('exit', ok));
    child.kill('SIGTERM');
    await exited;
  }
  await rm(dir, { recursive: true, force: true });
}

export async function startSshd(o: { sftp?: boolean; pathPrefix?: string } = {}): Promise<TestSshd> {
  const dir = await mkdtemp(join(tmpdir(), 'nanomind-sshd-'));
  const key = (name: string) => execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(dir, name)]);
  await Promise.all([key('host_key'), key('user_key'), key('wrong_key')]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'user_key.pub')));
  // sshd refuses to start as root without its privilege-separation folder.
  if (process.getuid?.() === 0 && !existsSync('/run/sshd')) await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const port = await freePort();
  await writeFile(join(dir, 'sshd_config'), [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_key')}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PermitRootLogin prohibit-password', 'PubkeyAuthentication yes',
    'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'StrictModes no', 'UsePAM no',
    ...(o.sftp === false ? [] : ['Subsystem sftp /usr/lib/openssh/sftp-server']), 'LogLevel ERROR', 'MaxStartups 100',
    // The "board" finds the same node and npm as the tests, wherever they are installed.
    `SetEnv PATH=${o.pathPrefix ? `${o.pathPrefix}:` : ''}${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, '',
  ].join('\n'));
  const hostPub = (await readFile(join(dir, 'host_key.pub'), 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  await writeFile(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${hostPub}\n`);
  await writeFile(join(dir, 'ssh_config'), [
    'Host *', `  IdentityFile ${join(dir, 'user_key')}`, '  IdentitiesOnly yes', `  UserKnownHostsFile ${join(dir, 'known_hosts')}`,
    '  GlobalKnownHostsFile /dev/null', '  StrictHostKeyChecking yes', '',
  ].join('\n'));
  let log = '';
  const child = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  await waitForPort(port, child, () => log);
  return {
    dir, port, user: userInfo().username,
    identity: join(dir, 'user_key'), wrongIdentity: join(dir, 'wrong_key'), knownHosts: join(dir, 'known_hosts'), config: join(dir, 'ssh_config'),
    stop: () => stopServer(child, dir),
  };
}
