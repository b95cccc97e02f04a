/**
 * Deploy targets: `ssh://[user@]host[:port]/path` (path absolute; `/~/dir` means `dir` under the remote
 * home) and `adb://SERIAL/path` (SERIAL as `adb devices` prints it, `host:port` for network adb).
 * Remote paths and bundle file names are limited to a safe character set so no remote shell, scp or
 * rsync ever sees a character it would interpret.
 */
import { fail } from '../errors.js';

export type Target =
  | { readonly kind: 'ssh'; readonly url: string; readonly user?: string; readonly host: string; readonly port?: number; readonly path: string }
  | { readonly kind: 'adb'; readonly url: string; readonly serial: string; readonly path: string };

/** Characters allowed in remote paths and bundle file names. */
export const SAFE_PATH = /^[\w.+@/-]+$/;

export function checkRemotePath(path: string, what: string): string {
  const segments = path.split('/').filter((s) => s && s !== '.');
  if (!SAFE_PATH.test(path) || segments.some((s) => s === '..') || !segments.length)
    throw fail('E_USAGE', `${what} '${path}': expected a folder path of letters, digits and . _ - + @ (not '/', no '..')`,
      { hint: 'e.g. ssh://orangepi@board.local/opt/nanomind/llava or ssh://pi@10.0.0.5/~/models/llava' });
  return path.replace(/\/+$/, '');
}

export function parseTarget(url: string): Target {
  const m = /^(ssh|adb):\/\/([^/]+)(\/.*)?$/.exec(url);
  if (!m) throw fail('E_USAGE', `--to '${url}': expected ssh://[user@]host[:port]/path or adb://SERIAL/path`);
  const rawPath = decodeURIComponent(m[3] ?? '');
  if (m[1] === 'adb') {
    if (!/^[\w.:-]+$/.test(m[2])) throw fail('E_USAGE', `--to '${url}': '${m[2]}' is not an adb serial`);
    if (rawPath.startsWith('/~')) throw fail('E_USAGE', `--to '${url}': adb paths must be absolute (e.g. /data/local/tmp/nanomind)`);
    return { kind: 'adb', url, serial: m[2], path: checkRemotePath(rawPath, 'adb path') };
  }
  let u: URL;
  try {
    u = new URL(`ssh://${m[2]}/`);
  } catch {
    throw fail('E_USAGE', `--to '${url}': cannot parse the host part '${m[2]}'`);
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host || !/^[\w.:%-]+$/.test(host)) throw fail('E_USAGE', `--to '${url}': bad host '${u.hostname}'`);
  const user = u.username ? decodeURIComponent(u.username) : undefined;
  if (user !== undefined && !/^[\w.-]+$/.test(user)) throw fail('E_USAGE', `--to '${url}': bad user name '${user}'`);
  // `/~/dir` is home-relative; ssh sessions start in the home folder, so the relative path is enough.
  const path = rawPath.startsWith('/~/') ? rawPath.slice(3) : rawPath;
  return { kind: 'ssh', url, user, host, port: u.port ? Number(u.port) : undefined, path: checkRemotePath(path, 'ssh path') };
}

/** `'it'\''s'`: one argument for a POSIX shell. */
export const shq = (s: string): string => (/^[\w.,:/@%+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
