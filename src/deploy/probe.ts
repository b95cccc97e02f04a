/**
 * The board check: one POSIX sh script, one round trip. It prints `key=value` lines (what the board is
 * and has) and `<where> <sha256>  ./<file>` lines (the deployed bundle and any staging folder an
 * interrupted deploy left), which the sync plan compares with the local bundle.
 *
 * It changes one thing: a deploy interrupted between its two renames leaves no `<path>` but a
 * `<path>.old-<id>`; that copy is put back first, so the board always has its last complete bundle.
 * `NANOMIND_PROBE_FREE_KB` (passed in from the local environment) overrides the free space, to test the
 * no-space path without filling a disk.
 */
import { fail } from '../errors.js';

export const PROBE_SCRIPT = String.raw`
P=$1; R=$2
kv() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | head -n 1)"; }
if [ ! -e "$P" ]; then
  for o in "$P".old-*; do if [ -d "$o" ]; then mv "$o" "$P" && kv recovered "$o"; break; fi; done
fi
kv arch "$(uname -m 2>/dev/null)"
kv kernel "$(uname -r 2>/dev/null)"
os=$( (. /etc/os-release && printf '%s' "$PRETTY_NAME") 2>/dev/null)
[ -n "$os" ] || os=$(uname -s 2>/dev/null)
kv os "$os"
kv model "$(tr -d '\000' </proc/device-tree/model 2>/dev/null)"
kv node "$(node --version 2>/dev/null)"
kv npm "$(command -v npm)"
d=$P; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
f=$NANOMIND_PROBE_FREE_KB
[ -n "$f" ] || f=$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {print $4}')
kv free_kb "$f"
v=$(cat /sys/kernel/debug/rknpu/version /proc/debug/rknpu/driver_version 2>/dev/null)
[ -n "$v" ] || v=$(dmesg 2>/dev/null | grep -ioE 'rknpu[^0-9]*[0-9]+\.[0-9]+\.[0-9]+' | tail -n 1)
kv npu "$v"
[ -d /sys/module/rocket ] && kv npu_mainline rocket
kv librknnrt "$(ls /usr/lib/librknnrt.so /usr/lib64/librknnrt.so /usr/local/lib/librknnrt.so /usr/lib/aarch64-linux-gnu/librknnrt.so /vendor/lib64/librknnrt.so 2>/dev/null)"
kv opencl "$(ls /etc/OpenCL/vendors/*.icd /vendor/lib64/libOpenCL.so 2>/dev/null)"
kv vulkan "$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /vendor/lib64/hw/vulkan.*.so 2>/dev/null)"
kv mali "$(ls -d /dev/mali0 /sys/class/misc/mali0 2>/dev/null)"
kv rsync "$(command -v rsync)"
kv sha256sum "$(command -v sha256sum)"
kv runtime "$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$R/node_modules/nanomind/package.json" 2>/dev/null)"
kv home "$HOME"
if [ ! -e "$P" ]; then kv live absent
elif [ -f "$P/bundle.json" ] || [ -f "$P/bricks.json" ]; then kv live bundle
elif [ -d "$P" ] && [ -z "$(ls -A "$P" 2>/dev/null)" ]; then kv live empty
else kv live other; fi
sums() { (cd "$1" && find . -name .rsync-partial -prune -o -type f -exec sha256sum {} +) 2>/dev/null | sed "s|^|$2 |"; }
[ -d "$P" ] && sums "$P" live
for s in "$P".staging-*; do [ -d "$s" ] && sums "$s" "staging:$(basename "$s")"; done
exit 0
`;

export interface Readiness {
  readonly arch: string;
  readonly os: string;
  readonly kernel: string;
  readonly model: string;
  readonly node: string;
  readonly npm: string;
  readonly freeBytes: number | null;
  readonly npu: string;
  readonly librknnrt: string;
  readonly opencl: string;
  readonly vulkan: string;
  readonly mali: string;
  readonly rsync: boolean;
  readonly sha256sum: boolean;
  /** nanomind version installed in the runtime folder ('' when none). */
  readonly runtime: string;
  readonly home: string;
  readonly live: 'absent' | 'empty' | 'bundle' | 'other';
  /** A `<path>.old-*` copy put back by this check. */
  readonly recovered?: string;
}

export interface RemoteState {
  readonly live: ReadonlyMap<string, string>;
  readonly staging: readonly { readonly name: string; readonly files: ReadonlyMap<string, string> }[];
}

export function parseProbe(stdout: string): { readiness: Readiness; state: RemoteState } {
  const kv = new Map<string, string>();
  const live = new Map<string, string>();
  const staging = new Map<string, Map<string, string>>();
  for (const line of stdout.split('\n')) {
    const sum = /^(live|staging:(\S+)) ([0-9a-f]{64}) [ *]\.\/(.+)$/.exec(line);
    if (sum) {
      if (sum[1] === 'live') live.set(sum[4], sum[3]);
      else { const m = staging.get(sum[2]) ?? new Map<string, string>(); m.set(sum[4], sum[3]); staging.set(sum[2], m); }
      continue;
    }
    const eq = line.indexOf('=');
    if (eq > 0 && /^[a-z_0-9]+$/.test(line.slice(0, eq))) kv.set(line.slice(0, eq), line.slice(eq + 1).trim());
  }
  if (!kv.has('arch') || !kv.has('live'))
    throw fail('E_DEPLOY_BOARD', 'the board check printed no readiness report', { notes: stdout.split('\n').slice(0, 10) });
  const freeKb = Number(kv.get('free_kb'));
  const npuRaw = kv.get('npu') ?? '';
  const npuVersion = /(\d+\.\d+\.\d+)/.exec(npuRaw)?.[1];
  const get = (k: string) => kv.get(k) ?? '';
  const readiness: Readiness = {
    arch: get('arch'), os: get('os'), kernel: get('kernel'), model: get('model'), node: get('node'), npm: get('npm'),
    freeBytes: kv.get('free_kb') && Number.isFinite(freeKb) ? freeKb * 1024 : null,
    npu: npuVersion ? `rknpu ${npuVersion}` : kv.get('npu_mainline') ? 'rocket (mainline)' : '',
    librknnrt: get('librknnrt'), opencl: get('opencl'), vulkan: get('vulkan'), mali: get('mali'),
    rsync: !!kv.get('rsync'), sha256sum: !!kv.get('sha256sum'), runtime: get('runtime'), home: get('home'),
    live: (['absent', 'empty', 'bundle', 'other'].includes(get('live')) ? get('live') : 'other') as Readiness['live'],
    ...(kv.get('recovered') ? { recovered: kv.get('recovered') } : {}),
  };
  return { readiness, state: { live, staging: [...staging].map(([name, files]) => ({ name, files })) } };
}

/** The Node.js release `nodeInstallStep` installs (Node 20 LTS: the runtime's `engines`). */
export const BOARD_NODE_VERSION = 'v20.20.2';

/**
 * The one command that gives a board without Node >= 20 the official build for its CPU, into /usr/local
 * (on the PATH of non-interactive ssh sessions, which read no ~/.profile). undefined: no official build.
 */
export function nodeInstallStep(arch: string): string | undefined {
  const dist = ({ aarch64: 'arm64', arm64: 'arm64', x86_64: 'x64', armv7l: 'armv7l' } as Record<string, string>)[arch];
  if (!dist) return undefined;
  const v = BOARD_NODE_VERSION;
  return `curl -fsSL https://nodejs.org/dist/${v}/node-${v}-linux-${dist}.tar.xz | sudo tar -xJ -C /usr/local --strip-components=1`;
}

/** Node's major version from `node --version` output (0 when none). */
export const nodeMajor = (v: string): number => Number(/^v?(\d+)/.exec(v)?.[1] ?? 0);

export interface ReadinessRow { readonly check: string; readonly value: string; readonly status: 'ok' | 'warn' | 'missing' }

/** The readiness table: what the board has, and whether nanomind can use it. */
export function readinessRows(r: Readiness, o: { needBytes: number; localNode?: string }): ReadinessRow[] {
  const major = nodeMajor(r.node);
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  return [
    { check: 'board', value: [r.model, r.arch].filter(Boolean).join(', ') || 'unknown', status: r.arch === 'aarch64' || r.arch === 'arm64' ? 'ok' : 'warn' },
    { check: 'OS', value: `${r.os} (kernel ${r.kernel})`, status: 'ok' },
    { check: 'Node.js', value: major >= 20 ? r.node : `${r.node || 'not found'} (need >= 20)`, status: major >= 20 ? 'ok' : 'missing' },
    { check: 'free space', value: r.freeBytes === null ? 'unknown' : `${gib(r.freeBytes)} (need ${gib(o.needBytes)})`, status: r.freeBytes === null ? 'warn' : r.freeBytes >= o.needBytes ? 'ok' : 'missing' },
    { check: 'NPU driver', value: r.npu || 'not found (needs root to read debugfs on some images)', status: r.npu ? 'ok' : 'warn' },
    { check: 'librknnrt', value: r.librknnrt || 'not found', status: r.librknnrt ? 'ok' : 'warn' },
    { check: 'GPU OpenCL', value: r.opencl || (r.mali ? `${r.mali}, no OpenCL ICD` : 'not found'), status: r.opencl ? 'ok' : 'warn' },
    { check: 'GPU Vulkan', value: r.vulkan || 'not found', status: r.vulkan ? 'ok' : 'warn' },
    { check: 'sha256sum', value: r.sha256sum ? 'yes' : 'not found', status: r.sha256sum ? 'ok' : 'missing' },
    { check: 'rsync', value: r.rsync ? 'yes' : 'no (scp is used)', status: r.rsync ? 'ok' : 'warn' },
    { check: 'nanomind runtime', value: r.runtime || 'not installed', status: r.runtime ? 'ok' : 'warn' },
  ];
}
