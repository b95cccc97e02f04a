/**
 * Running nanomind on the board: `deploy --run` (output streamed back) and interactive sessions
 * (`nanomind chat --remote ssh://…`, a TTY through `ssh -t`). Both run the installed runtime's CLI
 * (runtime.ts) unless a command prefix is given; `{bundle}` in the arguments is the deployed path.
 */
import { execa } from 'execa';
import { fail } from '../errors.js';
import { adbTransport } from './adb.js';
import { DEFAULT_RUNTIME_DIR, remoteNanomindCommand } from './runtime.js';
import { sshTransport, type SshOptions } from './ssh.js';
import { parseTarget, type Target } from './target.js';
import type { ExecResult, Transport } from './transport.js';

export function transportFor(target: Target, ssh: SshOptions = {}): Transport {
  return target.kind === 'ssh' ? sshTransport(target, ssh) : adbTransport(target);
}

export interface RemoteRunOptions {
  /** Command prefix that starts nanomind on the board (default: node <runtimeDir>/node_modules/nanomind/bin/nanomind.js). */
  readonly nanomind?: readonly string[];
  readonly runtimeDir?: string;
  readonly signal?: AbortSignal;
  readonly onStdout?: (chunk: string) => void;
  readonly onStderr?: (chunk: string) => void;
}

export interface RemoteRun extends ExecResult { readonly command: readonly string[] }

/** `{bundle}` → the deployed path, in every argument. */
export const expandArgs = (argv: readonly string[], bundlePath: string): string[] => argv.map((a) => a.split('{bundle}').join(bundlePath));

export function remoteArgv(argv: readonly string[], bundlePath: string, o: Pick<RemoteRunOptions, 'nanomind' | 'runtimeDir'> = {}): string[] {
  return [...(o.nanomind ?? remoteNanomindCommand(o.runtimeDir ?? DEFAULT_RUNTIME_DIR)), ...expandArgs(argv, bundlePath)];
}

/** Runs nanomind with `argv` on the board, streaming its output; the exit status is returned, not thrown. */
export async function runRemote(t: Transport, argv: readonly string[], bundlePath: string, o: RemoteRunOptions = {}): Promise<RemoteRun> {
  const command = remoteArgv(argv, bundlePath, o);
  const r = await t.sh('exec "$@"', command, { signal: o.signal, onStdout: o.onStdout, onStderr: o.onStderr });
  return { ...r, command };
}

/**
 * An interactive nanomind session on the board with this terminal attached, e.g.
 * `openRemoteSession('ssh://pi@board/opt/nanomind/llava', ['chat', '{bundle}'])`. Returns the exit code.
 */
export async function openRemoteSession(url: string, argv: readonly string[], o: { ssh?: SshOptions; nanomind?: readonly string[]; runtimeDir?: string } = {}): Promise<number> {
  const target = parseTarget(url);
  const cmd = transportFor(target, o.ssh).interactive(remoteArgv(argv, target.path, o));
  const r = await execa(cmd.file, cmd.args, { stdio: 'inherit', reject: false });
  if (r.code === 'ENOENT') throw fail('E_DEPLOY_NO_TOOL', `'${cmd.file}' is not installed on this machine`);
  if (target.kind === 'ssh' && r.exitCode === 255) throw fail('E_DEPLOY_UNREACHABLE', `ssh session to ${target.host} failed (see the message above)`);
  return r.exitCode ?? 1;
}
