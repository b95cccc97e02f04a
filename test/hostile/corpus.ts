/**
 * A corpus of malformed and hostile model inputs, generated (no committed binaries): each case is a
 * folder or file that every command reading models must refuse with one error line and exit 1.
 * `expect` is the error code the case must produce at intake.
 */
import { copyFile, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema, type ModelProto } from 'onnx-buf';
import { GraphBuilder, makeTensor } from '../../src/onnx/builder.js';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';

export interface CorpusCase {
  readonly name: string;
  /** The path given to the commands. */
  readonly path: string;
  readonly expect: string;
  /** Commands that read it: aux-file cases are read by partition and run only (inspect reads graphs). */
  readonly verbs: readonly ('inspect' | 'partition' | 'run')[];
}

/** y = x·W + b, valid; the cases below break one thing each. */
function base(): ModelProto {
  const g = new GraphBuilder('base');
  const x = g.input('x', 'float32', [1, 4]);
  const w = g.init('W', [4, 4], new Float32Array(16).fill(0.5));
  const b = g.init('b', [4], new Float32Array(4).fill(1));
  g.output(g.op('Add', [g.op('MatMul', [x, w]), b], {}, { name: 'add' }), 'float32', [1, 4]);
  return g.model();
}

const init = (m: ModelProto, name: string) => m.graph!.initializer.find((t) => t.name === name)!;

const MODEL_CASES: Record<string, { expect: string; edit: (m: ModelProto) => void }> = {
  'raw-data-short': { expect: 'E_ONNX_INVALID', edit: (m) => { init(m, 'W').rawData = init(m, 'W').rawData.slice(0, 40); } },
  'negative-dims': { expect: 'E_ONNX_INVALID', edit: (m) => { init(m, 'W').dims = [-4n, 4n]; } },
  'overflowing-dims': { expect: 'E_ONNX_INVALID', edit: (m) => { init(m, 'W').dims = [1n << 40n, 1n << 40n]; } },
  'absurd-shape-no-data': { expect: 'E_ONNX_INVALID', edit: (m) => { const w = init(m, 'W'); w.dims = [100000n, 100000n]; w.rawData = new Uint8Array(0); } },
  'constant-claims-more': {
    expect: 'E_ONNX_INVALID',
    edit: (m) => {
      const t = makeTensor('c', [1000], new Float32Array(4));
      m.graph!.node.unshift(create(NodeProtoSchema, { name: 'const', opType: 'Constant', output: ['c'], attribute: [{ name: 'value', type: 4, t } as never] }));
    },
  },
  'undefined-input': { expect: 'E_ONNX_INVALID', edit: (m) => { m.graph!.node[0].input[1] = 'nowhere'; } },
  'unproduced-output': { expect: 'E_ONNX_INVALID', edit: (m) => { m.graph!.output[0].name = 'ghost'; } },
  'undeclared-domain': { expect: 'E_ONNX_INVALID', edit: (m) => { m.graph!.node[0].domain = 'com.example.evil'; } },
  'duplicate-producer': { expect: 'E_ONNX_INVALID', edit: (m) => { m.graph!.node.push(create(NodeProtoSchema, { name: 'again', opType: 'Relu', input: ['x'], output: [m.graph!.node[0].output[0]] })); } },
  'no-default-opset': { expect: 'E_ONNX_INVALID', edit: (m) => { m.opsetImport = m.opsetImport.filter((o) => o.domain !== '' && o.domain !== 'ai.onnx'); m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: 'com.microsoft', version: 1n })); } },
  cycle: {
    expect: 'E_ONNX_GRAPH',
    edit: (m) => { // add's output feeds a Relu whose output feeds the MatMul that add reads
      m.graph!.node.push(create(NodeProtoSchema, { name: 'loop', opType: 'Relu', input: [m.graph!.node[1].output[0]], output: ['back'] }));
      m.graph!.node[0].input[0] = 'back';
    },
  },
  'two-problems': { expect: 'E_ONNX_INVALID', edit: (m) => { m.graph!.node[0].domain = 'com.example.evil'; m.graph!.node[1].input[1] = 'nowhere'; } },
};

/** Writes the corpus under `root` (which must exist); `outside` is a folder outside every case. */
export async function writeCorpus(root: string, outside: string): Promise<CorpusCase[]> {
  const cases: CorpusCase[] = [];
  for (const [name, c] of Object.entries(MODEL_CASES)) {
    const m = base();
    c.edit(m);
    const file = join(root, `${name}.onnx`);
    await writeFile(file, toBinary(ModelProtoSchema, m));
    cases.push({ name, path: file, expect: c.expect, verbs: ['inspect', 'partition', 'run'] });
  }
  const good = toBinary(ModelProtoSchema, base());
  await writeFile(join(root, 'truncated.onnx'), good.slice(0, Math.floor(good.length / 2)));
  cases.push({ name: 'truncated', path: join(root, 'truncated.onnx'), expect: 'E_ONNX_PARSE', verbs: ['inspect', 'partition', 'run'] });

  // A folder whose model file is a link to a model outside it.
  await writeFile(join(outside, 'model.onnx'), good);
  await mkdir(join(root, 'symlinked-model'));
  await symlink(join(outside, 'model.onnx'), join(root, 'symlinked-model', 'model.onnx'));
  cases.push({ name: 'symlinked-model', path: join(root, 'symlinked-model'), expect: 'E_PATH_ESCAPE', verbs: ['inspect', 'partition', 'run'] });

  // A real model whose image input declares an absurd static shape: verification must not allocate it.
  {
    const dir = join(root, 'absurd-input-shape');
    await mkdir(dir);
    const m = fromBinary(ModelProtoSchema, await readFile(join(EMBEDDED_MODEL, 'monolithic', 'model.onnx')));
    const px = m.graph!.input.find((i) => i.name === 'pixel_values')!;
    const shape = (px.type!.value.value as { shape: { dim: { value: unknown }[] } }).shape;
    shape.dim[2].value = { case: 'dimValue', value: 10_000_000n };
    shape.dim[3].value = { case: 'dimValue', value: 10_000_000n };
    await writeFile(join(dir, 'model.onnx'), toBinary(ModelProtoSchema, m));
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json'])
      await copyFile(join(EMBEDDED_MODEL, f), join(dir, f));
    cases.push({ name: 'absurd-input-shape', path: dir, expect: 'E_VERIFY_SHAPE', verbs: ['partition', 'run'] });
  }

  // The embedded model's split folder with one tokenizer / config / processor file broken.
  const aux: Record<string, { expect: string; file: string; text?: string; link?: true }> = {
    'tokenizer-not-json': { expect: 'E_TOKENIZER', file: 'tokenizer.json', text: '{"model": {"type": "BPE", ' },
    'tokenizer-wrong-types': { expect: 'E_TOKENIZER', file: 'tokenizer.json', text: '{"model": 5, "added_tokens": "none"}' },
    'tokenizer-huge-string': { expect: 'E_TOKENIZER', file: 'tokenizer.json', text: JSON.stringify({ model: { type: 'WordLevel', vocab: { ['a'.repeat(3 << 20)]: 0 } } }) },
    'tokenizer-symlinked': { expect: 'E_PATH_ESCAPE', file: 'tokenizer.json', link: true },
    'config-not-json': { expect: 'E_CONFIG_INVALID', file: 'config.json', text: 'model_type: llava' },
    'config-wrong-types': { expect: 'E_CONFIG_INVALID', file: 'config.json', text: JSON.stringify({ model_type: ['llava'], vocab_size: 'many', image_token_index: -3 }) },
    'config-null': { expect: 'E_CONFIG_INVALID', file: 'config.json', text: 'null' },
    'preprocessor-wrong-types': { expect: 'E_PREPROCESSOR', file: 'preprocessor_config.json', text: JSON.stringify({ do_resize: true, size: 'big', image_mean: 'red', image_std: [1, 1, 1], do_normalize: true }) },
    'preprocessor-huge-string': { expect: 'E_PREPROCESSOR', file: 'preprocessor_config.json', text: JSON.stringify({ image_processor_type: 'x'.repeat(2 << 20) }) },
  };
  for (const [name, c] of Object.entries(aux)) {
    const dir = join(root, name);
    await mkdir(join(dir, 'onnx'), { recursive: true });
    for (const f of ['vision_encoder.onnx', 'embed_tokens.onnx', 'decoder_model_merged.onnx', 'audio_encoder.onnx'])
      await copyFile(join(EMBEDDED_MODEL, 'onnx', f), join(dir, 'onnx', f));
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json'])
      await copyFile(join(EMBEDDED_MODEL, f), join(dir, f));
    if (c.link) {
      await rm(join(dir, c.file));
      await symlink(join(EMBEDDED_MODEL, c.file), join(dir, c.file));
    } else {
      await writeFile(join(dir, c.file), c.text!);
    }
    cases.push({ name, path: dir, expect: c.expect, verbs: c.file === 'config.json' ? ['inspect', 'partition', 'run'] : ['partition', 'run'] });
  }
  return cases;
}
