/**
 * The committed trained model in models/shapes-vlm/ (tools/shapes-vlm/): every ONNX file loads in ONNX
 * Runtime with the onnx-community interface, the tokenizer loads with @huggingface/tokenizers and agrees
 * with the Python tokenizer it was trained with (ids recorded in eval/reference.json), the chat template
 * renders the prompts PyTorch was run on, the eval set is well-formed, and the monolithic image graph
 * reproduces PyTorch's greedy answers on a few held-out examples. The chat template puts the question
 * before the image, as the model was trained.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

const DIR = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
const readJson = async (f: string): Promise<any> => JSON.parse(await readFile(join(DIR, f), 'utf8'));

interface EvalRow {
  id: string; image: string; question: string; answer: string; type: string; modality: string; audio?: string;
}

const TYPES = ['color', 'shape', 'count', 'position', 'describe'];
const SPLIT = {
  'onnx/vision_encoder.onnx': { inputs: ['pixel_values'], outputs: ['image_features'] },
  'onnx/audio_encoder.onnx': { inputs: ['input_features'], outputs: ['audio_features'] },
  'onnx/embed_tokens.onnx': { inputs: ['input_ids'], outputs: ['inputs_embeds'] },
  'monolithic/model.onnx': { inputs: ['pixel_values', 'input_features', 'input_ids', 'attention_mask'], outputs: ['logits'] },
};

let config: any, pre: any, tokConfig: any, reference: any, tok: Tokenizer, rows: EvalRow[];

beforeAll(async () => {
  [config, pre, tokConfig, reference] = await Promise.all(
    ['config.json', 'preprocessor_config.json', 'tokenizer_config.json', 'eval/reference.json'].map(readJson));
  tok = new Tokenizer(await readJson('tokenizer.json'), tokConfig);
  rows = (await readFile(join(DIR, 'eval', 'eval.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
});

const sessions: ort.InferenceSession[] = [];
afterAll(async () => { await Promise.all(sessions.map((s) => s.release())); });
const open = async (f: string) => { const s = await ort.InferenceSession.create(join(DIR, f)); sessions.push(s); return s; };

function render(row: Pick<EvalRow, 'modality' | 'question'>): string {
  const content = [{ type: 'image' }, row.modality === 'spoken' ? { type: 'audio' } : { type: 'text', text: row.question }];
  return new Template(tokConfig.chat_template).render({ messages: [{ role: 'user', content }], add_generation_prompt: true });
}

function promptIds(row: EvalRow): number[] {
  return tok.encode(render(row), { add_special_tokens: false }).ids.flatMap((id: number): number[] =>
    new Array<number>(id === config.image_token_index ? config.image_seq_length : id === config.audio_token_index ? config.audio_seq_length : 1).fill(id));
}

describe('shapes-vlm ONNX files', () => {
  it('load in ONNX Runtime with the onnx-community interface', async () => {
    for (const [file, io] of Object.entries(SPLIT)) {
      const s = await open(file);
      expect(s.inputNames, file).toEqual(io.inputs);
      expect(s.outputNames, file).toEqual(io.outputs);
    }
    const L = config.text_config.num_hidden_layers;
    const d = await open('onnx/decoder_model_merged.onnx');
    const kv = (p: string) => Array.from({ length: L }, (_, i) => [`${p}.${i}.key`, `${p}.${i}.value`]).flat();
    expect(d.inputNames).toEqual(['inputs_embeds', 'attention_mask', 'position_ids', ...kv('past_key_values')]);
    expect(d.outputNames).toEqual(['logits', ...kv('present')]);
  });

  it('encoders produce image_seq_length / audio_seq_length rows of the decoder width', async () => {
    const H = config.text_config.hidden_size;
    const s = pre.size.height;
    const img = (await (await open('onnx/vision_encoder.onnx')).run({
      pixel_values: new ort.Tensor('float32', new Float32Array(3 * s * s), [1, 3, s, s]) })).image_features;
    expect(img.dims).toEqual([1, config.image_seq_length, H]);
    const aud = (await (await open('onnx/audio_encoder.onnx')).run({
      input_features: new ort.Tensor('float32', new Float32Array(pre.feature_size * pre.nb_max_frames).fill(-0.5), [1, pre.feature_size, pre.nb_max_frames]) })).audio_features;
    expect(aud.dims).toEqual([1, config.audio_seq_length, H]);
  });

  it('are small', async () => {
    let total = 0;
    for (const f of [...Object.keys(SPLIT), 'onnx/decoder_model_merged.onnx']) total += (await stat(join(DIR, f))).size;
    expect(total).toBeLessThan(12e6);
  });
});

describe('shapes-vlm tokenizer and chat template', () => {
  it('maps each special token to one id and back', () => {
    const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<image>', '<audio>'];
    for (const s of specials) {
      const id = tok.token_to_id(s)!;
      expect(id, s).toBeTypeOf('number');
      expect(tok.encode(s, { add_special_tokens: false }).ids).toEqual([id]);
      expect(tok.decode([id], { skip_special_tokens: false })).toBe(s);
      expect(tok.decode([id], { skip_special_tokens: true })).toBe('');
    }
    expect(tok.token_to_id('<image>')).toBe(config.image_token_index);
    expect(tok.token_to_id('<audio>')).toBe(config.audio_token_index);
    expect(tok.token_to_id(tokConfig.eos_token)).toBe(config.text_config.eos_token_id);
    const text = '<|im_start|>user\n<image><audio><|im_end|>\n';
    expect(tok.decode(tok.encode(text, { add_special_tokens: false }).ids, { skip_special_tokens: false })).toBe(text);
  });

  it('gives the Python tokenizer\'s ids on every string of the task', () => {
    const table = reference.token_ids as Record<string, number[]>;
    expect(Object.keys(table).length).toBeGreaterThan(100);
    for (const [text, ids] of Object.entries(table)) {
      expect(tok.encode(text, { add_special_tokens: false }).ids, text).toEqual(ids);
      expect(tok.decode(ids, { skip_special_tokens: false }), text).toBe(text);
    }
  });

  it('renders the prompts PyTorch was run on', () => {
    expect(render({ modality: 'typed', question: 'how many shapes are there?' })).toBe(reference.prompt_example.typed);
    expect(render({ modality: 'spoken', question: '' })).toBe(reference.prompt_example.spoken);
  });
});

describe('shapes-vlm eval set', () => {
  it('is well-formed: unique ids, balanced types, files of the model\'s input format', async () => {
    expect(rows.length).toBe(300);
    expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
    for (const modality of ['typed', 'spoken']) {
      const group = rows.filter((r) => r.modality === modality);
      expect(group.length).toBe(modality === 'typed' ? 200 : 100);
      for (const t of TYPES) expect(group.filter((r) => r.type === t).length, `${modality} ${t}`).toBe(group.length / TYPES.length);
    }
    for (const r of rows) {
      expect(typeof r.question === 'string' && r.question.length > 0 && typeof r.answer === 'string' && r.answer === r.answer.trim()).toBe(true);
      const meta = await sharp(join(DIR, 'eval', r.image)).metadata();
      expect([meta.format, meta.width, meta.height, meta.channels], r.id).toEqual(['png', pre.size.width, pre.size.height, 3]);
      if (r.modality === 'spoken') {
        const wav = await readFile(join(DIR, 'eval', r.audio!));
        expect(wav.toString('ascii', 0, 4) + wav.toString('ascii', 8, 12)).toBe('RIFFWAVE');
        // fmt chunk: PCM, mono, 16 kHz, 16 bit; at most chunk_length seconds
        expect([wav.readUInt16LE(20), wav.readUInt16LE(22), wav.readUInt32LE(24), wav.readUInt16LE(34)]).toEqual([1, 1, pre.sampling_rate, 16]);
        expect(wav.readUInt32LE(40) / 2).toBeLessThanOrEqual(pre.n_samples);
      } else {
        expect(r.audio).toBeUndefined();
      }
    }
    expect(Object.keys(reference.answers).sort()).toEqual(rows.map((r) => r.id).sort());
  });

  it('holds 40 typed 5-turn conversations on their own scenes, with PyTorch\'s answer for every turn', async () => {
    const convs = (await readFile(join(DIR, 'eval', 'conversations.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(convs.length).toBe(40);
    expect(new Set(convs.map((c) => c.id)).size).toBe(40);
    expect(new Set(convs.map((c) => c.image)).size).toBe(40);
    for (const c of convs) {
      expect(c.turns.length, c.id).toBe(5);
      for (const t of c.turns) expect(TYPES.includes(t.type) && t.question.length > 0 && t.answer === t.answer.trim(), c.id).toBe(true);
      const meta = await sharp(join(DIR, 'eval', c.image)).metadata();
      expect([meta.format, meta.width, meta.height], c.id).toEqual(['png', pre.size.width, pre.size.height]);
      expect(reference.conversation_answers[c.id], c.id).toHaveLength(5);
    }
    expect(Object.keys(reference.conversation_answers).sort()).toEqual(convs.map((c) => c.id).sort());
  });
});

describe('shapes-vlm monolithic graph', () => {
  it('reproduces PyTorch\'s greedy answers on held-out typed questions', async () => {
    const s = await open('monolithic/model.onnx');
    // a typed prompt has no <audio> rows: the audio features are computed and left unused
    const silence = new ort.Tensor('float32', new Float32Array(pre.feature_size * pre.nb_max_frames).fill(-0.5), [1, pre.feature_size, pre.nb_max_frames]);
    const eos = tok.token_to_id('<|im_end|>')!;
    const picked = TYPES.map((t) => rows.find((r) => r.modality === 'typed' && r.type === t)!);
    for (const row of picked) {
      const { data, info } = await sharp(join(DIR, 'eval', row.image)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const hw = info.width * info.height;
      const px = new Float32Array(3 * hw);
      for (let c = 0; c < 3; c++)
        for (let p = 0; p < hw; p++) px[c * hw + p] = (data[p * 3 + c] * pre.rescale_factor - pre.image_mean[c]) / pre.image_std[c];
      const ids = promptIds(row);
      const out: number[] = [];
      for (let step = 0; step < 24; step++) {
        const all = [...ids, ...out].map(BigInt);
        const { logits } = await s.run({
          pixel_values: new ort.Tensor('float32', px, [1, 3, info.height, info.width]),
          input_features: silence,
          input_ids: new ort.Tensor('int64', BigInt64Array.from(all), [1, all.length]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(all.length).fill(1n), [1, all.length]),
        });
        const V = logits.dims[2], off = (all.length - 1) * V, l = logits.data as Float32Array;
        let next = 0;
        for (let v = 1; v < V; v++) if (l[off + v] > l[off + next]) next = v;
        if (next === eos) break;
        out.push(next);
      }
      expect(tok.decode(out, { skip_special_tokens: true }).trim(), row.id).toBe(reference.answers[row.id]);
    }
  });
});
