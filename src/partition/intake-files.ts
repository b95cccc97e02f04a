/**
 * The tokenizer and processor files of a brick set, checked when partition writes them rather than when
 * `run` first reads them: each is parsed by the same loader the runtime uses (src/run/inputs), so a
 * file partition accepts is one the runtime accepts. Also refused here: JSON holding a string over
 * MAX_STRING characters (no real tokenizer or config has one; a hostile file uses it to exhaust memory).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fail, type ErrorCode } from '../errors.js';
import type { BrickKind } from '../formats/names.js';
import { readJsonFile } from '../formats/json-file.js';
import { loadFeatureExtractorConfig } from '../run/inputs/audio.js';
import { loadFamilyProcessor } from '../run/inputs/families/index.js';
import { loadImageProcessorConfig } from '../run/inputs/image.js';
import { loadTokenizer } from '../run/inputs/tokenizer.js';

export const MAX_STRING = 1 << 20;

const CODES: Readonly<Record<string, ErrorCode>> = {
  'config.json': 'E_CONFIG_INVALID', 'generation_config.json': 'E_CONFIG_INVALID', 'tokenizer.json': 'E_TOKENIZER',
  'tokenizer_config.json': 'E_TOKENIZER', 'special_tokens_map.json': 'E_TOKENIZER', 'preprocessor_config.json': 'E_PREPROCESSOR',
  'processor_config.json': 'E_PREPROCESSOR', 'chat_template.json': 'E_CHAT_TEMPLATE',
};

/** The first string longer than `limit` in a JSON value, as `path (n characters)`. */
function longString(v: unknown, path: string, limit: number): string | undefined {
  if (typeof v === 'string') return v.length > limit ? `${path || '(top level)'} (${v.length} characters)` : undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) { const r = longString(v[i], `${path}[${i}]`, limit); if (r) return r; }
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k.length > limit) return `a key of ${path || '(top level)'} (${k.length} characters)`;
      const r = longString(x, path ? `${path}.${k}` : k, limit);
      if (r) return r;
    }
  }
  return undefined;
}

/** Checks the copied files in brick-set folder `dir` for bricks of `kinds`; throws the runtime loader's error. */
export async function checkIntakeFiles(dir: string, kinds: ReadonlySet<BrickKind>): Promise<void> {
  const present = new Set(await readdir(dir));
  for (const [name, code] of Object.entries(CODES)) {
    if (!present.has(name)) continue;
    const file = join(dir, name);
    const json = await readJsonFile(file, code);
    if (!json || typeof json !== 'object' || Array.isArray(json)) throw fail(code, `${file}: expected a JSON object`, { file });
    const long = longString(json, '', MAX_STRING);
    if (long) throw fail(code, `${file}: ${long}: over the ${MAX_STRING}-character limit`, { file, hint: 'the file is corrupt or not from this model' });
  }
  if (present.has('tokenizer.json')) await loadTokenizer(dir);
  if (present.has('preprocessor_config.json')) {
    if (kinds.has('vision')) (await loadFamilyProcessor(dir)) ?? (await loadImageProcessorConfig(dir));
    if (kinds.has('audio')) await loadFeatureExtractorConfig(dir);
  }
}
