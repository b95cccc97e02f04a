/**
 * Debian's Dropbear (the ssh server of Buildroot / OpenWrt-style boards: no SFTP) on 127.0.0.1 and a
 * random port, for the deploy tests. Dropbear reads the login user's ~/.ssh/authorized_keys and has no
 * option to look elsewhere, so it runs as root in a private mount namespace (`unshare --mount`) where a
 * throw-away folder is bind-mounted over /root: the real /root/.ssh is never read or written, and the
 * "board's" home is that folder. Debian's SFTP server is masked there too: Dropbear boards have none. Needs root, dropbear and unshare; `dropbearMissing` says why not.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { freePort, stopServer, waitForPort } from './sshd.js';

export const dropbearMissing = process.getuid?.() !== 0 ? 'needs root (Dropbear logs in only as its own user, and the test maps /root in a private namespace)'
  : !existsSync('/usr/sbin/dropbear') ? '/usr/sbin/dropbear is missing (apt-get install dropbear-bin)'
  : !existsSync('/usr/bin/unshare') ? 'unshare is missing (util-linux)' : undefined;

export interface TestDropbear {
  readonly dir: string;
  /** The board's home (seen as /root by its sessions). */
  readonly home: string;
  readonly port: number;
  readonly user: 'root';
  readonly identity: string;
  readonly knownHosts: string;
  stop(): Promise<void>;
}

export async function startDropbear(): Promise<TestDropbear> {
  const dir = await mkdtemp(join(tmpdir(), 'nanomind-dropbear-'));
  const home = join(dir, 'home');
  await mkdir(join(home, '.ssh'), { recursive: true, mode: 0o700 });
  await chmod(home, 0o700);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'user', '-f', join(dir, 'user_key')]);
  await writeFile(join(home, '.ssh', 'authorized_keys'), await readFile(join(dir, 'user_key.pub')), { mode: 0o600 });
  await execa('dropbearkey', ['-t', 'ed25519', '-f', join(dir, 'host_key')]);
  const hostPub = (await execa('dropbearkey', ['-y', '-f', join(dir, 'host_key')])).stdout.split('\n').find((l) => l.startsWith('ssh-ed25519'))!;
  const port = await freePort();
  await writeFile(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${hostPub.split(' ').slice(0, 2).join(' ')}\n`);
  let log = '';
  // -s: no passwords; -F -E: foreground, log to stderr. The bind mount exists only in this namespace.
  const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c',
    // Debian links /usr/lib/sftp-server (Dropbear's SFTP path) to OpenSSH's; boards with Dropbear have none.
    'mount --bind "$1" /root && { [ ! -e /usr/lib/sftp-server ] || mount --bind /dev/null "$(readlink -f /usr/lib/sftp-server)"; } && exec /usr/sbin/dropbear -F -E -s -p "127.0.0.1:$2" -r "$3" -P "$4"', 'sh',
    home, String(port), join(dir, 'host_key'), join(dir, 'dropbear.pid')], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  await waitForPort(port, child, () => log);
  return {
    dir, home, port, user: 'root', identity: join(dir, 'user_key'), knownHosts: join(dir, 'known_hosts'),
    stop: () => stopServer(child, dir),
  };
}
