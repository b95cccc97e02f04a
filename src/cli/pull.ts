import type { Command } from 'commander';
import type { PullProgress } from '../hub/pull.js';
import { collect } from './flags.js';
import { bytes, emit, table } from './output.js';

interface PullFlags { revision: string; dtype: string; include: string[]; out?: string; hubUrl?: string; offline?: boolean; json?: boolean }

export const pullVerb = (program: Command) => program
  .command('pull <repo-id>')
  .description('download one dtype variant of an onnx-community model from the Hugging Face hub (cached, resumable, verified)')
  .option('--revision <rev>', 'branch, tag or commit', 'main')
  .option('--dtype <dtype>', 'fp32 | fp16 | int8 | uint8 | quantized (= q8) | q4 | q4f16 | bnb4 (a graph the variant lacks falls back: q4f16 → fp16 → fp32, others → fp32)', 'fp32')
  .option('--include <glob>', 'also fetch repo files matching this glob, e.g. "onnx/*_fp16.onnx*" (repeatable)', collect, [])
  .option('-o, --out <dir>', 'write plain files into this folder (default: the Hugging Face cache, HF_HUB_CACHE / HF_HOME)')
  .option('--hub-url <url>', 'hub endpoint (default: HF_ENDPOINT, else https://huggingface.co)')
  .option('--offline', 'use cached files only, as HF_HUB_OFFLINE=1 does')
  .option('--json', 'print the result as JSON')
  .action(async (repo: string, f: PullFlags) => {
    const { pull } = await import('../hub/pull.js');
    const bars = await progressBars(f.json);
    let result;
    try {
      result = await pull({ repo, revision: f.revision, dtype: f.dtype, include: f.include, out: f.out, hubUrl: f.hubUrl, offline: f.offline || undefined, onProgress: bars.update });
    } finally {
      bars.stop();
    }
    emit(result, f.json, (r) => {
      let out = `${r.repo}@${r.revision} (${r.commit.slice(0, 12)})${r.offline ? ' [offline]' : ''} → ${r.dir}\n`;
      out += table(['file', 'size', 'status'], r.files.map((x) => [x.path, bytes(x.size), x.status]));
      const variants = Object.entries(r.variants).map(([k, v]) => `${k}=${v}`).join(', ');
      out += `${r.files.length} file(s), ${bytes(r.files.reduce((s, x) => s + x.size, 0))}; ${bytes(r.bytesDownloaded)} downloaded now${variants ? `; variants: ${variants}` : ''}\n`;
      for (const n of r.notes) out += `note: ${n}\n`;
      return out;
    });
  });

/** A total bar plus one bar per active file on an interactive stderr; nothing otherwise. */
async function progressBars(quiet?: boolean): Promise<{ update: (e: PullProgress) => void; stop: () => void }> {
  if (quiet || !process.stderr.isTTY || process.env.CI) return { update() {}, stop() {} };
  const { default: cliProgress } = await import('cli-progress');
  const multi = new cliProgress.MultiBar({
    stream: process.stderr, hideCursor: true, clearOnComplete: true, autopadding: true,
    format: ' {bar} {percentage}% {done}/{size} {name}',
  }, cliProgress.Presets.shades_classic);
  const files = new Map<string, ReturnType<typeof multi.create>>();
  let total: ReturnType<typeof multi.create> | undefined;
  let have = 0;
  let all = 0;
  const label = (n: number, size: number) => ({ done: bytes(n), size: bytes(size) });
  return {
    update(e) {
      if (e.type === 'plan') {
        all = e.files.reduce((s, x) => s + x.size, 0);
        have = e.files.reduce((s, x) => s + x.have, 0);
        total = multi.create(all, have, { name: 'total', ...label(have, all) });
      } else if (e.type === 'bytes') {
        let bar = files.get(e.path);
        if (!bar) { bar = multi.create(e.size, e.have - e.delta, { name: e.path, ...label(e.have, e.size) }); files.set(e.path, bar); }
        bar.update(e.have, label(e.have, e.size));
        have += e.delta;
        total?.update(have, label(have, all));
      } else {
        const bar = files.get(e.path);
        if (bar) { multi.remove(bar); files.delete(e.path); }
      }
    },
    stop() { multi.stop(); },
  };
}
