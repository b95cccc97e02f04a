/**
 * `deploy --serve`: (re)start `nanomind serve` on the board as a long-running service and wait until
 * its /health answers. The old server is stopped first (SIGTERM, so its running answer finishes; KILL
 * after 15 s). A systemd user unit (`nanomind-serve.service`, restarted on failure, enabled for the
 * user's session) when `systemctl --user` works there, else a detached process (setsid + nohup) with a
 * pid file and a log under the state folder. The API key travels inside the script on stdin (never on
 * a command line) into a 0600 environment file that the unit or the process reads.
 */
import { fail } from '../errors.js';
import { remoteArgv } from './remote.js';
import { shq } from './target.js';
import type { Transport } from './transport.js';

export const SERVE_UNIT = 'nanomind-serve.service';
export const DEFAULT_SERVE_DIR = '.nanomind/serve';

export interface ServeOnBoard {
  readonly port: number;
  /** Address the server binds on the board (default 127.0.0.1, or 0.0.0.0 with an API key). */
  readonly host?: string;
  readonly apiKey?: string;
  /** State folder on the board (pid file, log, env file), relative to its home unless absolute. */
  readonly stateDir?: string;
  /** 'process' skips systemd even where it is available (tests). */
  readonly mode?: 'auto' | 'process';
}

export interface ServeStarted {
  /** How to reach it: the board's address for a network bind, else its loopback (tunnel with ssh -L). */
  readonly url: string;
  readonly mode: 'systemd' | 'process';
  /** The server's pid on the board. */
  readonly pid: number;
  /** What was stopped first: a pid, 'unit', or nothing. */
  readonly stopped?: string;
  readonly host: string;
  readonly port: number;
  readonly log: string;
}

/** A systemd unit's ExecStart= word: double-quoted, with `\`, `"`, `%` and `$` escaped. */
export const systemdWord = (s: string): string => `"${s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`;

/** The unit file; `argv[0]` must be absolute (the script resolves `node` on the board). */
export const serviceUnit = (argv: readonly string[], envFile: string, workDir: string): string => [
  '[Unit]', 'Description=nanomind serve (OpenAI / Ollama API)', 'After=network-online.target', '',
  '[Service]', `ExecStart=${argv.map(systemdWord).join(' ')}`, `EnvironmentFile=-${envFile}`, `WorkingDirectory=${workDir}`,
  'KillSignal=SIGTERM', 'TimeoutStopSec=15', 'Restart=on-failure', 'RestartSec=2', '',
  '[Install]', 'WantedBy=default.target', '',
].join('\n');

/**
 * $1 state dir, $2 port, $3 mode (auto|process), then the command. Prints key=value lines: stopped=,
 * mode=, pid=, ready=1 (or died=1 with the log's tail on stderr, exit 5).
 */
export const SERVE_SCRIPT = String.raw`
abs() { case $1 in /*) printf '%s' "$1";; *) printf '%s' "$HOME/$1";; esac; }
D=$(abs "$1"); PORT=$2; MODE=$3; shift 3
mkdir -p "$D" || exit 3
PIDF="$D/serve.pid"; LOG="$D/serve.log"; ENVF="$D/serve.env"; UNIT=nanomind-serve.service
stop_pid() {
  kill -0 "$1" 2>/dev/null || return 0
  # A stale pid file must not kill whatever process now has that pid.
  [ -r "/proc/$1/cmdline" ] && ! tr '\0' ' ' < "/proc/$1/cmdline" | grep -q nanomind && return 0
  kill -TERM "$1"; i=0
  while kill -0 "$1" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
  kill -0 "$1" 2>/dev/null && kill -KILL "$1"
  echo "stopped=$1"
}
[ -f "$PIDF" ] && stop_pid "$(cat "$PIDF")"
rm -f "$PIDF"
SYSTEMD=0
if [ "$MODE" != process ] && command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then SYSTEMD=1; fi
if command -v systemctl >/dev/null 2>&1 && systemctl --user is-active --quiet "$UNIT" 2>/dev/null; then systemctl --user stop "$UNIT" && echo "stopped=unit"; fi
umask 077
: > "$ENVF"
[ -n "$NANOMIND_API_KEY" ] && printf 'NANOMIND_API_KEY=%s\n' "$NANOMIND_API_KEY" > "$ENVF"
N=$1; shift
case $N in /*) ;; *) N=$(command -v "$N") || { echo "no '$1' on the board" >&2; exit 4; } ;; esac
if [ $SYSTEMD = 1 ]; then
  U="$HOME/.config/systemd/user"; mkdir -p "$U"
  printf '%s' "$UNIT_TEXT" | sed "s|@NODE@|$N|; s|@ENV@|$ENVF|; s|@HOME@|$HOME|" > "$U/$UNIT"
  systemctl --user daemon-reload && systemctl --user enable "$UNIT" >/dev/null 2>&1; systemctl --user restart "$UNIT" || exit 6
  echo mode=systemd
  PID=$(systemctl --user show -p MainPID --value "$UNIT")
else
  cd "$HOME" || exit 3
  S=; command -v setsid >/dev/null 2>&1 && S=setsid
  ( set -a; . "$ENVF"; set +a; exec $S nohup "$N" "$@" > "$LOG" 2>&1 < /dev/null ) &
  PID=$!
  echo "$PID" > "$PIDF"
  echo mode=process
fi
echo "pid=$PID"
i=0
while [ $i -lt 600 ]; do
  if "$N" -e "fetch('http://127.0.0.1:' + process.argv[1] + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" "$PORT" 2>/dev/null; then echo ready=1; exit 0; fi
  if [ $SYSTEMD = 1 ]; then systemctl --user is-active --quiet "$UNIT" || { echo died=1; journalctl --user -u "$UNIT" -n 20 --no-pager >&2; exit 5; }
  else kill -0 "$PID" 2>/dev/null || { echo died=1; tail -n 20 "$LOG" >&2; exit 5; }; fi
  sleep 0.2; i=$((i+1))
done
echo "timeout=1"; exit 7
`;

export interface ServeRunOptions {
  readonly nanomind?: readonly string[];
  readonly runtimeDir?: string;
  readonly signal?: AbortSignal;
}

/** Stops the board's old server and starts `nanomind serve <bundle>` there; resolves once /health answers. */
export async function startServeOnBoard(t: Transport, bundlePath: string, s: ServeOnBoard, o: ServeRunOptions = {}): Promise<ServeStarted> {
  const boardHost = t.target.kind === 'ssh' ? t.target.host : '127.0.0.1';
  const host = s.host ?? (s.apiKey ? '0.0.0.0' : '127.0.0.1');
  const argv = remoteArgv(['serve', '{bundle}', '--host', host, '--port', String(s.port)], bundlePath, o);
  const stateDir = s.stateDir ?? DEFAULT_SERVE_DIR;
  // The unit's paths are filled in on the board (node's absolute path, $HOME); argv[1..] are as given.
  const unit = serviceUnit(['@NODE@', ...argv.slice(1)], '@ENV@', '@HOME@');
  const script = `UNIT_TEXT=${shq(unit)}\nNANOMIND_API_KEY=${shq(s.apiKey ?? '')}\n${SERVE_SCRIPT}`;
  const r = await t.sh(script, [stateDir, String(s.port), s.mode ?? 'auto', ...argv], { signal: o.signal });
  const kv = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(r.stdout)?.[1];
  if (kv('ready') !== '1')
    throw fail('E_DEPLOY_SERVE', `nanomind serve did not come up on the board (${kv('died') ? 'it exited' : kv('timeout') ? 'no /health answer within 2 minutes' : `exit ${r.exitCode}`})`,
      { notes: r.stderr.trim().split('\n').slice(-20), hint: `see ${stateDir}/serve.log on the board${kv('mode') === 'systemd' ? ` or journalctl --user -u ${SERVE_UNIT}` : ''}` });
  const reach = host === '0.0.0.0' || host === '::' ? boardHost : host;
  return {
    url: `http://${reach.includes(':') ? `[${reach}]` : reach}:${s.port}`, mode: kv('mode') === 'systemd' ? 'systemd' : 'process', pid: Number(kv('pid')), stopped: kv('stopped'), host, port: s.port,
    log: kv('mode') === 'systemd' ? `journalctl --user -u ${SERVE_UNIT}` : `${stateDir}/serve.log`,
  };
}
