/**
 * The contract every way of reaching a board fulfils (ssh.ts, adb.ts): run a POSIX sh script there,
 * copy files there, and give the command line of an interactive session. Commands are built by pure
 * functions (tested without a board) and run through execa.
 */
import { execa } from 'execa';
import { fail } from '../errors.js';
import type { Target } from './target.js';

export interface ExecResult { readonly stdout: string; readonly stderr: string; readonly exitCode: number }

export interface ExecOptions {
  readonly signal?: AbortSignal;
  readonly onStdout?: (chunk: string) => void;
  readonly onStderr?: (chunk: string) => void;
}

export interface PushFile {
  /** Absolute local path. */
  readonly local: string;
  /** Path relative to `destDir`. */
  readonly rel: string;
  readonly bytes: number;
}

export interface PushOptions {
  readonly signal?: AbortSignal;
  /** Called as each file is complete on the board. */
  readonly onFile?: (rel: string, bytes: number) => void;
}

export interface Transport {
  readonly target: Target;
  /** `rsync`, `scp`, `ssh-stream` (scp refused: no SFTP on the board) or `adb push`, once known. */
  readonly method: string;
  /** Runs `script` with `sh` on the board, `args` as $1…; never throws for a non-zero exit of the script. */
  sh(script: string, args: readonly string[], o?: ExecOptions): Promise<ExecResult>;
  /** Copies files into `destDir` (which exists; subfolders too) on the board. */
  push(localDir: string, destDir: string, files: readonly PushFile[], o?: PushOptions): Promise<void>;
  /** Picks the copy method once the board's tools are known. */
  useMethod(remoteHasRsync: boolean): Promise<void>;
  /** file + args of an interactive session running `argv` on the board (a TTY, stdio inherited). */
  interactive(argv: readonly string[]): { readonly file: string; readonly args: readonly string[] };
  /** Ends shared connections (ssh's control master); the transport stays usable (it reconnects). */
  close(): Promise<void>;
}

/** The command a transport runs: kept as data so tests can check it. */
export interface Command {
  readonly file: string;
  readonly args: readonly string[];
  readonly input?: string;
  /** A local file fed to stdin instead of `input` (streamed, not read into memory). */
  readonly inputFile?: string;
}

/**
 * Runs one command; a missing program becomes `missing` (E_DEPLOY_NO_TOOL), an abort E_DEPLOY_ABORTED.
 * Other failures are returned for the transport to classify.
 */
export async function run(cmd: Command, o: ExecOptions & { missing: string }): Promise<ExecResult> {
  const sub = execa(cmd.file, cmd.args, {
    reject: false, cancelSignal: o.signal, ...(cmd.inputFile ? { inputFile: cmd.inputFile } : { input: cmd.input ?? '' }), stripFinalNewline: false, encoding: 'utf8', maxBuffer: 256 << 20,
  });
  if (o.onStdout) sub.stdout?.on('data', (d: Buffer) => o.onStdout!(d.toString()));
  if (o.onStderr) sub.stderr?.on('data', (d: Buffer) => o.onStderr!(d.toString()));
  const r = await sub;
  if (r.isCanceled || o.signal?.aborted)
    throw fail('E_DEPLOY_ABORTED', `${cmd.file} was interrupted`, { hint: 'deploy again: files already on the board are kept in the staging folder and not sent twice' });
  if (r.code === 'ENOENT') throw fail('E_DEPLOY_NO_TOOL', `'${cmd.file}' is not installed on this machine`, { hint: o.missing });
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? (r.signal ? 128 : 1) };
}

/**
 * Wraps a script so that `sh -s` parses all of it before running any of it (a brace group is one
 * command), then detaches stdin: nothing in the script can swallow the rest of the script.
 */
export const wrapScript = (script: string): string => `{\nexec </dev/null\n${script.trim()}\n}\n`;
