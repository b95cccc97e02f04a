/**
 * `nanomind deploy`: check the board, sync the bundle into place atomically, make sure the runtime is
 * there, optionally run it.
 *
 *   1. probe       one round trip: readiness (arch, OS, Node, free space, NPU, librknnrt, GPU APIs)
 *                  + sha256 of the live bundle and of leftover staging folders       (probe.ts)
 *   2. refuse early: target path holds something else, no Node (unless --skip-runtime),
 *                  no sha256sum, not enough space for the files to send             (E_DEPLOY_*)
 *   3. stage       link unchanged files, send changed ones (rsync or scp; adb push)  (sync.ts)
 *   4. verify+swap sha256 of every staged file, then rename into place
 *   5. runtime     version check, `npm pack` + `npm install --omit=dev` when it differs (runtime.ts)
 *   6. --run       nanomind on the board, output streamed back                       (remote.ts)
 *   7. --serve     stop the old `nanomind serve`, start the new one (systemd user unit or
 *                  detached process), wait for its /health                           (service.ts)
 *      --doctor    `nanomind doctor <bundle> --json` on the board, its report parsed into the result
 */
import { randomBytes } from 'node:crypto';
import { fail } from '../errors.js';
import { stageRunInputs, type RunInput } from './inputs.js';
import { loadDeployable, type Deployable } from './local.js';
import { nodeInstallStep, nodeMajor, parseProbe, PROBE_SCRIPT, readinessRows, type Readiness, type ReadinessRow } from './probe.js';
import { runRemote, transportFor, type RemoteRun } from './remote.js';
import { startServeOnBoard, type ServeOnBoard, type ServeStarted } from './service.js';
import { DEFAULT_RUNTIME_DIR, installRuntime, localVersion, runtimeAction } from './runtime.js';
import type { SshOptions } from './ssh.js';
import { planSync, prepareScript, verifySwapScript } from './sync.js';
import { parseTarget, type Target } from './target.js';
import type { Transport } from './transport.js';

export interface DeployOptions {
  /** Bundle (bundle.json) or brick set (bricks.json) folder. */
  readonly bundle: string;
  /** ssh://[user@]host[:port]/path or adb://SERIAL/path */
  readonly to: string;
  readonly ssh?: SshOptions;
  readonly skipRuntime?: boolean;
  /** Runtime folder on the board, relative to the remote home unless absolute (default .nanomind/runtime). */
  readonly runtimeDir?: string;
  /** nanomind arguments to run on the board afterwards; `{bundle}` is the deployed path. */
  readonly run?: readonly string[];
  /** Local images / audio for `run`: sent beside the bundle, appended as `--image <copy>`, removed after (inputs.ts). */
  readonly runInputs?: readonly RunInput[];
  /** Afterwards run `nanomind doctor` on the deployed bundle and return its report (not with `run`). */
  readonly doctor?: boolean;
  /** Command prefix that starts nanomind on the board (default: the installed runtime). */
  readonly remoteNanomind?: readonly string[];
  /** Afterwards, (re)start `nanomind serve` on the board as a service (service.ts). */
  readonly serve?: ServeOnBoard;
  /** Overrides the board's reported free space in KiB (tests; NANOMIND_PROBE_FREE_KB in the CLI). */
  readonly probeFreeKb?: number;
  readonly signal?: AbortSignal;
  /** Another transport (tests). */
  readonly transport?: Transport;
  readonly onStage?: (stage: string) => void;
  readonly onReadiness?: (rows: readonly ReadinessRow[], r: Readiness) => void;
  readonly onFile?: (rel: string, bytes: number) => void;
  readonly onOutput?: (stream: 'stdout' | 'stderr', chunk: string) => void;
}

export interface DeployResult {
  readonly target: string;
  readonly path: string;
  readonly kind: 'bundle' | 'bricks';
  readonly method: string;
  readonly readiness: Readiness;
  /** Files sent over the wire in this run. */
  readonly transferred: readonly string[];
  /** Files the board already had in the live bundle. */
  readonly unchanged: readonly string[];
  /** Files an interrupted earlier deploy had already sent (kept from its staging folder). */
  readonly resumed: readonly string[];
  readonly bytesTransferred: number;
  /** Every file on the board matched its local sha256 before the bundle was swapped in. */
  readonly verified: boolean;
  readonly runtime: { readonly action: 'skip' | 'up-to-date' | 'installed'; readonly local: string; readonly remote: string };
  readonly run?: Pick<RemoteRun, 'command' | 'exitCode'> & { readonly stdout: string };
  readonly serve?: ServeStarted;
  /** With `doctor`: the board's `nanomind doctor --json` report (machine probes, and each brick vs the CPU). */
  readonly doctor?: unknown;
  readonly notes: readonly string[];
}

export async function deploy(o: DeployOptions): Promise<DeployResult> {
  if (o.run && o.doctor) throw fail('E_USAGE', '--run and --doctor both run a command on the board; pick one');
  if (o.runInputs?.length && !o.run) throw fail('E_USAGE', '--image / --audio are inputs for --run; add --run "PROMPT"');
  const target = parseTarget(o.to);
  const local = await loadDeployable(o.bundle);
  const t = o.transport ?? transportFor(target, o.ssh);
  try {
    return await deployWith(t, o, target, local);
  } finally {
    if (!o.transport) await t.close();
  }
}

async function deployWith(t: Transport, o: DeployOptions, target: Target, local: Deployable): Promise<DeployResult> {
  const runtimeDir = o.runtimeDir ?? DEFAULT_RUNTIME_DIR;
  const notes: string[] = [];

  o.onStage?.('checking the board');
  const override = o.probeFreeKb !== undefined ? `NANOMIND_PROBE_FREE_KB=${Math.floor(o.probeFreeKb)}\n` : '';
  const probe = await t.sh(override + PROBE_SCRIPT, [target.path, runtimeDir], { signal: o.signal });
  const { readiness, state } = parseProbe(probe.stdout);
  if (readiness.recovered) notes.push(`restored ${readiness.recovered} left by a deploy interrupted during its final rename`);
  const id = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const plan = planSync(local.files, state, target.path, id);
  o.onReadiness?.(readinessRows(readiness, { needBytes: plan.sendBytes }), readiness);

  if (readiness.live === 'other')
    throw fail('E_DEPLOY_TARGET_OCCUPIED', `${target.path} on the board exists and is not a nanomind bundle or brick set; refusing to replace it`,
      { hint: 'deploy to a new or empty folder, e.g. append /llava to the --to path' });
  if (!readiness.sha256sum)
    throw fail('E_DEPLOY_BOARD', 'the board has no sha256sum (coreutils or busybox), which deploy needs to verify files');
  const version = localVersion();
  const action = runtimeAction(readiness.runtime, version, !!o.skipRuntime);
  if (action === 'install' && nodeMajor(readiness.node) < 20) {
    const step = nodeInstallStep(readiness.arch);
    throw fail('E_DEPLOY_NO_NODE', `${readiness.node ? `Node.js ${readiness.node} is` : 'Node.js is not'} installed on the board (${readiness.arch}); the nanomind runtime needs Node >= 20`,
      { hint: step ? `on the board run: ${step}   (then deploy again; or pass --skip-runtime)` : `install Node 20+ built for ${readiness.arch} on the board, or pass --skip-runtime` });
  }
  if (readiness.freeBytes !== null && readiness.freeBytes < plan.sendBytes)
    throw fail('E_DEPLOY_NO_SPACE', `not enough space on the board: ${readiness.freeBytes} bytes free at ${target.path}, ${plan.sendBytes} bytes to send`,
      { hint: 'free space on the board, or deploy to a path on a bigger disk (e.g. an NVMe or SD card mount)' });

  o.onStage?.('staging');
  await t.useMethod(readiness.rsync);
  const prep = await t.sh(prepareScript(plan), [target.path, plan.staging, plan.adopt ?? ''], { signal: o.signal });
  if (!/^prepared=1$/m.test(prep.stdout))
    throw /No space left/i.test(prep.stderr)
      ? fail('E_DEPLOY_NO_SPACE', `the board ran out of space while staging ${target.path}`)
      : fail('E_DEPLOY_BOARD', `preparing the staging folder failed (exit ${prep.exitCode}): ${prep.stderr.trim().split('\n').pop() ?? ''}`);

  o.onStage?.(`sending ${plan.send.length} file(s)`);
  const stagingPath = target.path.includes('/') ? `${target.path.slice(0, target.path.lastIndexOf('/'))}/${plan.staging}` : plan.staging;
  const sent: string[] = [];
  await t.push(local.dir, stagingPath, plan.send.map((f) => ({ local: f.abs, rel: f.rel, bytes: f.bytes })), {
    signal: o.signal,
    onFile: (rel, bytes) => { sent.push(rel); o.onFile?.(rel, bytes); },
  });

  o.onStage?.('verifying');
  const v = await t.sh(verifySwapScript(local.files), [target.path, plan.staging, id], { signal: o.signal });
  if (/^busy=1$/m.test(v.stdout))
    throw fail('E_DEPLOY_BUSY', `another deploy was swapping its bundle into ${target.path} for 30 s; this one stopped before its swap, ${target.path} is whole`,
      { hint: `deploy again; if no other deploy is running, a deploy was cut during its swap: remove ${target.path}.swap-lock on the board` });
  const verified = /^verified=1$/m.test(v.stdout) && /^swapped=1$/m.test(v.stdout);
  if (!verified) {
    const got = new Map(v.stdout.split('\n').filter((l) => l.startsWith('got ')).map((l) => { const [h, ...rest] = l.slice(4).split('  '); return [rest.join('  '), h]; }));
    const bad = local.files.filter((f) => got.get(f.rel) !== f.sha256).map((f) => `${f.rel}: ${got.has(f.rel) ? 'sha256 differs' : 'missing'} on the board`);
    throw fail('E_DEPLOY_VERIFY', `the staged bundle on the board does not match the local one; ${target.path} was left as it was`,
      { notes: bad.length ? bad : [v.stderr.trim() || 'no details'], hint: 'deploy again (changed files are re-sent); if it repeats, check the board\'s storage' });
  }

  let runtime: DeployResult['runtime'] = { action: action === 'install' ? 'installed' : action, local: version, remote: readiness.runtime };
  if (action === 'install') {
    o.onStage?.(`installing nanomind ${version} on the board`);
    const installed = await installRuntime(t, { runtimeDir, uname: readiness.arch, signal: o.signal, onOutput: (s) => o.onOutput?.('stderr', s) });
    runtime = { ...runtime, remote: installed.version };
    const k = installed.kernels;
    notes.push('note' in k ? k.note : `native kernels for the board: ${k.how} for ${readiness.arch}`);
  }

  let run: DeployResult['run'];
  let doctor: unknown;
  const argv = o.doctor ? DOCTOR_ARGV : o.run;
  if (argv) {
    const inputs = o.doctor ? undefined : await stageRunInputs(t, target.path, id, o.runInputs ?? [], { signal: o.signal });
    o.onStage?.(o.doctor ? 'doctor' : 'running');
    let r: RemoteRun;
    try {
      r = await runRemote(t, [...argv, ...(inputs?.args ?? [])], target.path, {
        nanomind: o.remoteNanomind, runtimeDir, signal: o.signal,
        // The doctor's JSON is parsed here, not streamed; its stderr (probe warnings) still is.
        onStdout: o.doctor ? undefined : (s) => o.onOutput?.('stdout', s), onStderr: (s) => o.onOutput?.('stderr', s),
      });
    } finally {
      await inputs?.remove();
    }
    run = { command: r.command, exitCode: r.exitCode, stdout: r.stdout };
    if (r.exitCode !== 0) notes.push(`the remote command exited with ${r.exitCode}`);
    if (o.doctor && r.exitCode === 0) {
      try {
        doctor = JSON.parse(r.stdout);
      } catch {
        throw fail('E_DEPLOY_REMOTE', `nanomind doctor on the board printed something other than its JSON report`, { notes: r.stdout.split('\n').slice(0, 5) });
      }
    }
  }

  let serve: ServeStarted | undefined;
  if (o.serve) {
    o.onStage?.(`starting nanomind serve on port ${o.serve.port}`);
    serve = await startServeOnBoard(t, target.path, o.serve, { nanomind: o.remoteNanomind, runtimeDir, signal: o.signal });
    if (serve.host === '127.0.0.1' && target.kind === 'ssh')
      notes.push(`the server listens on the board's loopback only: ssh -N -L ${serve.port}:127.0.0.1:${serve.port} ${target.user ? `${target.user}@` : ''}${target.host}, then open http://127.0.0.1:${serve.port}/ (or deploy with --api-key to listen on the network)`);
  }

  return {
    target: o.to, path: target.path, kind: local.kind, method: t.method, readiness,
    transferred: sent,
    unchanged: local.files.filter((f) => state.live.get(f.rel) === f.sha256).map((f) => f.rel),
    resumed: plan.keep.filter((f) => state.live.get(f.rel) !== f.sha256).map((f) => f.rel),
    bytesTransferred: plan.send.filter((f) => sent.includes(f.rel)).reduce((s, f) => s + f.bytes, 0),
    verified, runtime, run, serve, ...(doctor === undefined ? {} : { doctor }), notes,
  };
}

/** What `deploy --doctor` runs on the board. */
export const DOCTOR_ARGV: readonly string[] = ['doctor', '{bundle}', '--json'];

export { parseTarget, type Target } from './target.js';
export { openRemoteSession, runRemote, transportFor } from './remote.js';
export type { Readiness, ReadinessRow } from './probe.js';
