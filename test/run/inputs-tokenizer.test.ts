/**
 * The runtime tokenizer against transformers.js (AutoTokenizer over the same files) on the fixture's
 * byte-level BPE tokenizer; the streaming detokenizer; E_TOKENIZER on bad folders.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { AutoTokenizer, env, type PreTrainedTokenizer } from '@huggingface/transformers';
import { cleanupFixtures, fixtureDir, SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson } from '../fixtures/index.js';
import { createStreamDecoder, loadTokenizer, type TextTokenizer } from '../../src/run/inputs/tokenizer.js';
import { NanomindError } from '../../src/errors.js';

/** transformers.js resolves local models as `localModelPath + id`; point it at the fixture's parent. */
async function referenceTokenizer(dir: string): Promise<PreTrainedTokenizer> {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dirname(dir) + '/';
  return AutoTokenizer.from_pretrained(basename(dir));
}

const TEXTS = [
  'Hello the world, and the rest.',
  'héllo wörld — 世界 🎉🎉 naïve café',
  'multi\n\nline\ttabs   spaces  ',
  '<|im_start|>user\nWhat is in <image>?<|im_end|>\n<|im_start|>assistant\n',
  'specials glued<|endoftext|>to text<audio><video>',
  '',
];

let dir: string;
let tok: TextTokenizer;
let ref: PreTrainedTokenizer;
let scratch: string;

beforeAll(async () => {
  dir = (await fixtureDir('llava')).dir;
  tok = await loadTokenizer(dir);
  ref = await referenceTokenizer(dir);
  scratch = await mkdtemp(join(tmpdir(), 'nanomind-tok-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
  await cleanupFixtures();
});

describe('loadTokenizer', () => {
  it('encodes exactly as transformers.js, with and without special tokens', () => {
    for (const t of TEXTS) {
      for (const add of [true, false]) {
        expect(tok.encode(t, { addSpecialTokens: add }), JSON.stringify(t)).toEqual(ref.encode(t, { add_special_tokens: add }));
      }
    }
    expect(tok.encode('<image>')).toEqual([SPECIAL_TOKENS['<image>']]);
  });

  it('decodes exactly as transformers.js and round-trips text', () => {
    for (const t of TEXTS.filter(Boolean)) {
      const ids = tok.encode(t);
      for (const skip of [false, true]) {
        expect(tok.decode(ids, { skipSpecialTokens: skip })).toBe(ref.decode(ids, { skip_special_tokens: skip }));
      }
      expect(tok.decode(ids)).toBe(t);
    }
    expect(tok.decode([])).toBe('');
    // Ids past the tokenizer's vocab (models pad their embedding tables) carry no text.
    expect(tok.decode([...tok.encode('the'), 100_000])).toBe('the');
  });

  it('reads special ids, eos / pad / bos and the vocab size', () => {
    expect(tok.eosIds).toEqual([SPECIAL_TOKENS['<|im_end|>']]);
    expect(tok.padId).toBe(SPECIAL_TOKENS['<|endoftext|>']);
    expect(tok.bosId).toBeUndefined(); // bos_token is null in Qwen2's config
    expect([...tok.specialIds].sort()).toEqual(Object.values(SPECIAL_TOKENS).sort());
    expect(tok.vocabSize).toBe(320);
    expect(tok.tokenToId('<|im_start|>')).toBe(315);
    expect(tok.idToToken(319)).toBe('<image>');
    expect(tok.idToToken(5000)).toBeUndefined();
    expect(tok.specialTokens).toEqual({ eos_token: '<|im_end|>', pad_token: '<|endoftext|>' });
  });

  it('adds generation_config eos ids and accepts AddedToken objects in tokenizer_config', async () => {
    const d = join(scratch, 'multi-eos');
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
    await writeFile(join(d, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson({
      eos_token: { __type: 'AddedToken', content: '<|im_end|>' }, bos_token: { content: '<|endoftext|>' },
    })));
    await writeFile(join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: [316, 314] }));
    const t = await loadTokenizer(d);
    expect(t.eosIds).toEqual([316, 314]);
    expect(t.bosId).toBe(314);
  });

  it('works without tokenizer_config.json', async () => {
    const d = join(scratch, 'bare');
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
    const t = await loadTokenizer(d);
    expect(t.encode('the cat')).toEqual(tok.encode('the cat'));
    expect(t.eosIds).toEqual([]);
  });

  it('reports E_TOKENIZER for a missing, corrupt or foreign tokenizer.json', async () => {
    const cases: Record<string, string | undefined> = {
      missing: undefined,
      corrupt: '{"model": {"type": "BPE", ',
      'not-a-tokenizer': '{"hello": 1}',
      'unknown-model': JSON.stringify({ ...tokenizerJson(), model: { type: 'NoSuchModel' } }),
      'bad-config': '[1, 2]',
    };
    for (const [name, body] of Object.entries(cases)) {
      const d = join(scratch, name);
      await mkdir(d, { recursive: true });
      if (name === 'bad-config') {
        await writeFile(join(d, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
        await writeFile(join(d, 'tokenizer_config.json'), body!);
      } else if (body !== undefined) await writeFile(join(d, 'tokenizer.json'), body);
      const err = await loadTokenizer(d).then(() => undefined, (e: unknown) => e);
      expect(err, name).toBeInstanceOf(NanomindError);
      expect((err as NanomindError).code, name).toBe('E_TOKENIZER');
    }
  });
});

describe('createStreamDecoder', () => {
  it('streams text that joins to the full decode, never emitting a partial character', () => {
    for (const t of TEXTS.filter(Boolean)) {
      const ids = tok.encode(t);
      const s = createStreamDecoder(tok);
      const pieces = ids.map((id) => s.push(id));
      pieces.push(s.flush());
      expect(pieces.join(''), JSON.stringify(t)).toBe(tok.decode(ids, { skipSpecialTokens: true }));
      for (const p of pieces) expect(p).not.toContain('\uFFFD');
      expect(s.ids).toEqual(ids);
    }
  });

  it('holds back the bytes of a split UTF-8 character until it is complete', () => {
    // The fixture has no merges for 🎉 (F0 9F 8E 89): four byte tokens.
    const ids = tok.encode('🎉');
    expect(ids).toHaveLength(4);
    const s = createStreamDecoder(tok);
    expect(ids.slice(0, 3).map((id) => s.push(id))).toEqual(['', '', '']);
    expect(s.push(ids[3])).toBe('🎉');
    expect(s.flush()).toBe('');
  });

  it('keeps special tokens when asked, and flushes a truncated character as U+FFFD', () => {
    const s = createStreamDecoder(tok, { skipSpecialTokens: false });
    expect(s.push(316)).toBe('<|im_end|>');
    const bytes = tok.encode('世');
    expect(bytes.length).toBeGreaterThan(1);
    expect(s.push(bytes[0])).toBe('');
    expect(s.flush()).toBe('\uFFFD');
  });
});
