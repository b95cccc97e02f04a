/**
 * Chat template rendering and placeholder expansion against transformers.js: the rendered text and ids
 * equal `apply_chat_template` on the same files; the expanded ids equal what a Hugging Face processor
 * tokenizes after repeating the placeholder string N times.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { AutoTokenizer, env, type PreTrainedTokenizer } from '@huggingface/transformers';
import { CHAT_TEMPLATE, cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { loadTokenizer, type TextTokenizer } from '../../src/run/inputs/tokenizer.js';
import {
  expandPlaceholders, loadChatTemplate, loadPromptBuilder, pickChatTemplate, renderChatTemplate, type ChatMessage,
} from '../../src/run/inputs/chat-template.js';
import { NanomindError } from '../../src/errors.js';

async function referenceTokenizer(dir: string): Promise<PreTrainedTokenizer> {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dirname(dir) + '/';
  return AutoTokenizer.from_pretrained(basename(dir));
}

const codeOf = async (p: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(NanomindError);
    return (e as NanomindError).code;
  }
  return 'no error';
};

/** What a HF processor does to the prompt text: the i-th placeholder string repeated counts[i] times. */
function expandText(text: string, counts: Record<string, number[]>): string {
  const seen: Record<string, number> = {};
  return text.replace(/<image>|<audio>/g, (p) => p.repeat(counts[p][(seen[p] = (seen[p] ?? -1) + 1)]));
}

const CHATS: Record<string, ChatMessage[]> = {
  plain: [{ role: 'user', content: 'Hello there, how are the cats?' }],
  multiTurn: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Name a color.' },
    { role: 'assistant', content: 'Teal.' },
    { role: 'user', content: 'Another, in 中文 🎨' },
  ],
  image: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What is in this image?' }] }],
  twoImages: [
    { role: 'user', content: [{ type: 'text', text: 'Compare ' }, { type: 'image' }, { type: 'text', text: ' and ' }, { type: 'image' }] },
  ],
  audio: [{ role: 'user', content: [{ type: 'audio' }, { type: 'text', text: 'Transcribe this.' }] }],
  mixed: [
    { role: 'user', content: [{ type: 'image' }, { type: 'audio' }, { type: 'text', text: 'Describe both.' }] },
    { role: 'assistant', content: 'A cat, and a bell.' },
    { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'And this?' }] },
  ],
};

let llavaDir: string;
let audioDir: string;
let tok: TextTokenizer;
let ref: PreTrainedTokenizer;
let scratch: string;

beforeAll(async () => {
  llavaDir = (await fixtureDir('llava')).dir;
  audioDir = (await fixtureDir('audio')).dir;
  tok = await loadTokenizer(llavaDir);
  ref = await referenceTokenizer(llavaDir);
  scratch = await mkdtemp(join(tmpdir(), 'nanomind-chat-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
  await cleanupFixtures();
});

describe('chat template vs transformers.js apply_chat_template', () => {
  it('renders the same text and encodes the same ids for every chat, with and without generation prompt', async () => {
    const pb = await loadPromptBuilder(llavaDir, tok);
    for (const [name, msgs] of Object.entries(CHATS)) {
      for (const gen of [false, true]) {
        const refText = ref.apply_chat_template(msgs as never, { add_generation_prompt: gen, tokenize: false }) as unknown as string;
        const refIds = ref.apply_chat_template(msgs as never, {
          add_generation_prompt: gen, return_tensor: false, return_dict: false,
        }) as unknown as number[];
        expect(pb.render(msgs, { addGenerationPrompt: gen }), name).toBe(refText);
        const enc = pb.encode(msgs, { addGenerationPrompt: gen, counts: { image: 1, audio: 1 } });
        expect(enc.ids, name).toEqual(refIds); // one row per item: expansion is the identity
        expect(enc.text).toBe(refText);
      }
    }
  });

  it('expands each placeholder to the encoder rows, like a HF processor repeating the placeholder string', async () => {
    const pb = await loadPromptBuilder(llavaDir, tok);
    expect(pb.placeholders.image).toEqual({ tokenId: 319, count: 16 }); // config.json image_token_index, image_seq_length
    expect(pb.placeholders.audio).toEqual({ tokenId: 318, count: undefined }); // found in the vocab only
    for (const name of ['image', 'twoImages'] as const) {
      const enc = pb.encode(CHATS[name], { addGenerationPrompt: true });
      const expanded = expandText(enc.text, { '<image>': [16, 16] });
      expect(enc.ids).toEqual(ref.encode(expanded, { add_special_tokens: false }));
      for (const s of enc.spans) {
        expect(s).toMatchObject({ kind: 'image', tokenId: 319, length: 16 });
        expect(enc.ids.slice(s.start, s.start + s.length)).toEqual(Array(16).fill(319));
        expect(enc.ids[s.start - 1]).not.toBe(319);
        expect(enc.ids[s.start + s.length]).not.toBe(319);
      }
      expect(enc.spans.map((s) => s.index)).toEqual(name === 'image' ? [0] : [0, 1]);
    }
  });

  it('takes per-item counts in prompt order, and audio counts from the audio fixture config', async () => {
    const apb = await loadPromptBuilder(audioDir, await loadTokenizer(audioDir));
    expect(apb.placeholders.audio).toEqual({ tokenId: 318, count: 32 });
    const enc = apb.encode(CHATS.mixed, { counts: { image: [3, 5], audio: [7] } });
    expect(enc.spans.map(({ kind, index, length }) => [kind, index, length])).toEqual([
      ['image', 0, 3], ['audio', 0, 7], ['image', 1, 5],
    ]);
    expect(enc.ids).toEqual(ref.encode(expandText(enc.text, { '<image>': [3, 5], '<audio>': [7] }), { add_special_tokens: false }));
    expect(apb.encode(CHATS.audio).spans).toEqual([{ kind: 'audio', index: 0, tokenId: 318, start: expect.any(Number), length: 32 }]);
  });

  it('reports E_PROMPT for count mismatches and for placeholders with no known count', async () => {
    const pb = await loadPromptBuilder(llavaDir, tok);
    expect(await codeOf(() => pb.encode(CHATS.twoImages, { counts: { image: [4] } }))).toBe('E_PROMPT');
    expect(await codeOf(() => pb.encode(CHATS.image, { counts: { image: 0 } }))).toBe('E_PROMPT');
    expect(await codeOf(() => pb.encode(CHATS.audio))).toBe('E_PROMPT'); // llava config has no audio_seq_length
    expect(await codeOf(() => expandPlaceholders([1, 2], { image: { tokenId: 5 }, audio: { tokenId: 5 } }))).toBe('E_PROMPT');
    expect(expandPlaceholders([1, 5, 2], { image: { tokenId: 5, count: 2 } })).toEqual({
      ids: [1, 5, 5, 2], spans: [{ kind: 'image', index: 0, tokenId: 5, start: 1, length: 2 }],
    });
  });
});

describe('template sources and errors', () => {
  it('prefers chat_template.jinja, then chat_template.json, then tokenizer_config.json', async () => {
    const d = join(scratch, 'sources');
    await cp(llavaDir, d, { recursive: true });
    expect(await loadChatTemplate(d)).toBe(CHAT_TEMPLATE);
    await writeFile(join(d, 'chat_template.json'), JSON.stringify({ chat_template: 'json:{{ messages[0].content }}' }));
    expect(await loadChatTemplate(d)).toBe('json:{{ messages[0].content }}');
    await writeFile(join(d, 'chat_template.jinja'), '{{ bos_token }}jinja:{{ messages[0].content }}{{ eos_token }}');
    const t = await loadTokenizer(d);
    const pb = await loadPromptBuilder(d, t);
    // bos_token is unset in the fixture: it renders as an empty string, as in transformers.js.
    expect(pb.render([{ role: 'user', content: 'hi' }])).toBe('jinja:hi<|im_end|>');
  });

  it('picks a named template from a list (default unless named) and lists the names when missing', async () => {
    const list = [{ name: 'default', template: 'D' }, { name: 'tool_use', template: 'T' }];
    expect(pickChatTemplate(list, 'x')).toBe('D');
    expect(pickChatTemplate(list, 'x', 'tool_use')).toBe('T');
    expect(await codeOf(() => pickChatTemplate(list, 'x', 'rag'))).toBe('E_CHAT_TEMPLATE');
    expect(await codeOf(() => pickChatTemplate([{ name: 1 }], 'x'))).toBe('E_CHAT_TEMPLATE');
    expect(await codeOf(() => pickChatTemplate(42, 'x'))).toBe('E_CHAT_TEMPLATE');
  });

  it('reports E_CHAT_TEMPLATE for a missing, unparsable or raising template', async () => {
    const d = join(scratch, 'none');
    await cp(llavaDir, d, { recursive: true });
    const cfg = JSON.parse(await readFile(join(d, 'tokenizer_config.json'), 'utf8'));
    delete cfg.chat_template;
    await writeFile(join(d, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t = await loadTokenizer(d);
    expect(await codeOf(loadPromptBuilder(d, t))).toBe('E_CHAT_TEMPLATE');
    expect(await codeOf(loadPromptBuilder(d, t, { template: '{% for m in messages %}' }))).toBe('E_CHAT_TEMPLATE');
    const raising = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}";
    const pb = await loadPromptBuilder(d, t, { template: raising });
    expect(await codeOf(() => pb.render(CHATS.plain))).toBe('E_CHAT_TEMPLATE');
    expect(renderChatTemplate('{{ x }}|{{ eos_token }}', [], { eos_token: 'E' }, { extra: { x: 7 } })).toBe('7|E');
  });
});
