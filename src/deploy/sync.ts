/**
 * Incremental, atomic bundle sync. The new bundle is assembled in `<path>.staging-<id>` beside the live
 * one: files the live bundle already has (same sha256) are hard-linked (copied where the filesystem has
 * no hard links), files a previous interrupted deploy already sent are kept, only the rest cross the
 * wire. Then every file in staging is checked against the local sha256 list, and only then
 * `<path>` → `<path>.old-<id>`, staging → `<path>`, old removed. An interrupted deploy therefore never
 * leaves a half bundle at `<path>`; the probe puts `.old-<id>` back if it stopped between the renames.
 */
import type { RemoteState } from './probe.js';

export interface LocalFile {
  /** Relative path with `/` separators. */
  readonly rel: string;
  readonly abs: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface SyncPlan {
  readonly staging: string;
  /** A staging folder left by an interrupted deploy, adopted as this run's staging. */
  readonly adopt?: string;
  /** Other leftover staging folders, removed. */
  readonly drop: readonly string[];
  /** Already in the adopted staging with the right hash. */
  readonly keep: readonly LocalFile[];
  /** Same as in the live bundle: hard-linked into staging. */
  readonly link: readonly LocalFile[];
  readonly send: readonly LocalFile[];
  /** Files to delete from the adopted staging (stale, or about to be re-sent). */
  readonly remove: readonly string[];
  readonly sendBytes: number;
}

export function planSync(local: readonly LocalFile[], state: RemoteState, path: string, id: string): SyncPlan {
  const base = path.split('/').pop()!;
  const matches = (files: ReadonlyMap<string, string>) => local.filter((f) => files.get(f.rel) === f.sha256).length;
  // Adopt the leftover staging that already holds most of what we need.
  const best = [...state.staging].sort((a, b) => matches(b.files) - matches(a.files))[0];
  const adopt = best && matches(best.files) > 0 ? best : undefined;
  const keep: LocalFile[] = [];
  const link: LocalFile[] = [];
  const send: LocalFile[] = [];
  for (const f of local) {
    if (adopt?.files.get(f.rel) === f.sha256) keep.push(f);
    else if (state.live.get(f.rel) === f.sha256) link.push(f);
    else send.push(f);
  }
  const kept = new Set(keep.map((f) => f.rel));
  const remove = adopt ? [...adopt.files.keys()].filter((rel) => !kept.has(rel)) : [];
  return {
    staging: `${base}.staging-${id}`,
    adopt: adopt ? adopt.name : undefined,
    drop: state.staging.filter((s) => s !== adopt).map((s) => s.name),
    keep, link, send, remove,
    sendBytes: send.reduce((s, f) => s + f.bytes, 0),
  };
}

const heredoc = (tag: string, lines: readonly string[]) => `<<'${tag}'\n${lines.map((l) => `${l}\n`).join('')}${tag}`;
const dirsOf = (rels: readonly string[]) => [...new Set(rels.filter((r) => r.includes('/')).map((r) => r.slice(0, r.lastIndexOf('/'))))].sort();

/**
 * $1 = path, $2 = staging name, $3 = adopted staging name or ''. Leftovers named in the plan are
 * removed; names are the plan's own, so a wildcard never deletes anything else.
 */
export function prepareScript(plan: SyncPlan): string {
  return String.raw`
P=$1; case $P in /*) ;; *) P="$PWD/$P" ;; esac
S="$(dirname "$P")/$2"; A=$3
mkdir -p "$(dirname "$P")" || exit 3
while IFS= read -r d; do [ -n "$d" ] && rm -rf "$(dirname "$P")/$d"; done ${heredoc('NANOMIND_DROP', plan.drop)}
if [ -n "$A" ]; then mv "$(dirname "$P")/$A" "$S" || exit 3; else mkdir "$S" || exit 3; fi
cd "$S" || exit 3
while IFS= read -r f; do [ -n "$f" ] && rm -f "./$f"; done ${heredoc('NANOMIND_REMOVE', plan.remove)}
while IFS= read -r d; do [ -n "$d" ] && { mkdir -p "./$d" || exit 3; }; done ${heredoc('NANOMIND_DIRS', dirsOf([...plan.link, ...plan.send].map((f) => f.rel)))}
while IFS= read -r f; do
  [ -n "$f" ] || continue
  ln -f "$P/$f" "./$f" 2>/dev/null || cp -p "$P/$f" "./$f" || exit 4
done ${heredoc('NANOMIND_LINK', plan.link.map((f) => f.rel))}
echo prepared=1
`;
}

/**
 * $1 = path, $2 = staging name, $3 = id. Compares the sorted `sha256  file` list of staging with the
 * expected one, then swaps under a lock (`<path>.swap-lock`, waited for 30 s). Prints `verified=1` and
 * `swapped=1`, `busy=1` when the lock stayed taken, or the staging listing as `got` lines.
 */
export function verifySwapScript(local: readonly LocalFile[]): string {
  const expected = local.map((f) => `${f.sha256}  ${f.rel}`);
  return String.raw`
P=$1; case $P in /*) ;; *) P="$PWD/$P" ;; esac
S="$(dirname "$P")/$2"; ID=$3
T="$(dirname "$P")/.nanomind-verify-$ID"
cd "$S" || exit 3
find . -name .rsync-partial -type d -prune -exec rm -rf {} +
find . -type f -exec sha256sum {} + | sed 's|^\([0-9a-f]*\) [ *]\./|\1  |' | LC_ALL=C sort > "$T.got"
LC_ALL=C sort > "$T.want" ${heredoc('NANOMIND_SUMS', expected)}
if ! cmp -s "$T.want" "$T.got"; then
  echo verified=0
  sed 's|^|got |' "$T.got"
  rm -f "$T.want" "$T.got"
  exit 0
fi
rm -f "$T.want" "$T.got"
echo verified=1
# One swap at a time: a second deploy racing this one must not rename its staging INTO the new bundle.
L="$P.swap-lock"; n=0
while ! mkdir "$L" 2>/dev/null; do n=$((n+1)); if [ $n -ge 30 ]; then echo busy=1; exit 0; fi; sleep 1; done
trap 'rmdir "$L" 2>/dev/null' EXIT
if [ -e "$P" ]; then mv "$P" "$P.old-$ID" || exit 5; fi
if ! mv "$S" "$P"; then [ -e "$P.old-$ID" ] && mv "$P.old-$ID" "$P"; exit 5; fi
rm -rf "$P.old-$ID"
echo swapped=1
`;
}
