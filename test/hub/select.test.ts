/** Which repo files `pull` picks for a dtype: the onnx-community naming rules, on listings shaped like real repos. */
import { describe, expect, it } from 'vitest';
import { isNanomindError } from '../../src/errors.js';
import { globToRegExp, parseOnnxName, selectFiles, type RepoFile } from '../../src/hub/select.js';

const file = (path: string): RepoFile => ({ path, size: 1, oid: '0'.repeat(40) });
const listing = (...paths: string[]) => paths.map(file);
const code = (f: () => unknown) => { try { f(); return 'ok'; } catch (e) { return isNanomindError(e) ? e.code : String(e); } };

// A listing in the onnx-community layout, with the side files transformers.js repos typically hold (made up, not copied from a repo).
const LLAVA = listing(
  '.gitattributes', 'README.md', 'added_tokens.json', 'chat_template.json', 'config.json', 'generation_config.json', 'merges.txt',
  'preprocessor_config.json', 'processor_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json',
  'onnx/decoder_model_merged.onnx', 'onnx/decoder_model_merged.onnx_data', 'onnx/decoder_model_merged_fp16.onnx',
  'onnx/decoder_model_merged_q4f16.onnx', 'onnx/decoder_model_merged_q4.onnx',
  'onnx/embed_tokens.onnx', 'onnx/embed_tokens_fp16.onnx', 'onnx/embed_tokens_q4f16.onnx',
  'onnx/vision_encoder.onnx', 'onnx/vision_encoder_fp16.onnx', 'onnx/vision_encoder_q4f16.onnx', 'onnx/vision_encoder_quantized.onnx',
);

describe('pull file selection', () => {
  it('splits variant suffixes off onnx file names', () => {
    expect(parseOnnxName('onnx/decoder_model_merged_q4f16.onnx')).toEqual({ folder: 'onnx', stem: 'decoder_model_merged', suffix: 'q4f16' });
    expect(parseOnnxName('onnx/model_quantized.onnx')).toEqual({ folder: 'onnx', stem: 'model', suffix: 'quantized' });
    expect(parseOnnxName('model.onnx')).toEqual({ folder: '', stem: 'model', suffix: '' });
    expect(parseOnnxName('onnx/model.onnx_data')).toBeUndefined();
  });

  it('q4f16: the variant of every brick file plus side files; no README, no other variants', () => {
    const s = selectFiles(LLAVA, { dtype: 'q4f16' });
    expect(s.files.map((f) => f.path)).toEqual([
      'added_tokens.json', 'chat_template.json', 'config.json', 'generation_config.json', 'merges.txt',
      'onnx/decoder_model_merged_q4f16.onnx', 'onnx/embed_tokens_q4f16.onnx', 'onnx/vision_encoder_q4f16.onnx',
      'preprocessor_config.json', 'processor_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json',
    ]);
    expect(s.notes).toEqual([]);
  });

  it('fp32 takes the external data; a variant missing for one file falls back to fp32 with a note', () => {
    expect(selectFiles(LLAVA).files.map((f) => f.path).filter((p) => p.startsWith('onnx/')))
      .toEqual(['onnx/decoder_model_merged.onnx', 'onnx/decoder_model_merged.onnx_data', 'onnx/embed_tokens.onnx', 'onnx/vision_encoder.onnx']);
    const q = selectFiles(LLAVA, { dtype: 'quantized' });
    expect(q.variants).toEqual({ 'onnx/decoder_model_merged': 'fp32', 'onnx/embed_tokens': 'fp32', 'onnx/vision_encoder': 'quantized' });
    expect(q.notes.length).toBe(2);
    expect(code(() => selectFiles(LLAVA, { dtype: 'bnb4' }))).toBe('E_PULL_DTYPE');
    expect(code(() => selectFiles(LLAVA, { dtype: 'fp8' }))).toBe('E_USAGE');
  });

  it('multi-part external data, decoder_model beside decoder_model_merged, unknown graphs, --include', () => {
    const s = selectFiles(listing('config.json', 'onnx/model.onnx', 'onnx/model.onnx_data', 'onnx/model.onnx_data_1', 'onnx/model.onnx_data_10',
      'onnx/model_fp16.onnx', 'onnx/text_encoder.onnx'), { include: ['onnx/*_fp16.onnx*'] });
    expect(s.files.map((f) => f.path)).toEqual(['config.json', 'onnx/model.onnx', 'onnx/model.onnx_data', 'onnx/model.onnx_data_1', 'onnx/model.onnx_data_10', 'onnx/model_fp16.onnx']);
    expect(s.notes.join('\n')).toContain('onnx/text_encoder.onnx');
    const d = selectFiles(listing('onnx/decoder_model.onnx', 'onnx/decoder_model_merged.onnx', 'onnx/embed_tokens.onnx'));
    expect(d.files.map((f) => f.path)).toEqual(['onnx/decoder_model_merged.onnx', 'onnx/embed_tokens.onnx']);
    expect(code(() => selectFiles(listing('config.json', 'model.safetensors')))).toBe('E_PULL_NO_ONNX');
    expect(selectFiles(listing('config.json', 'model.safetensors'), { include: ['*.safetensors'] }).files.map((f) => f.path)).toEqual(['config.json', 'model.safetensors']);
  });

  it('globs: ** crosses folders, * and ? stay within one', () => {
    expect(globToRegExp('onnx/*.onnx').test('onnx/a.onnx')).toBe(true);
    expect(globToRegExp('*.onnx').test('onnx/a.onnx')).toBe(false);
    expect(globToRegExp('**/*.onnx').test('onnx/a.onnx')).toBe(true);
    expect(globToRegExp('**/*.onnx').test('a.onnx')).toBe(true);
    expect(globToRegExp('onnx/model.onnx_data_?').test('onnx/model.onnx_data_1')).toBe(true);
    expect(globToRegExp('a+b.json').test('a+b.json')).toBe(true);
  });
});
