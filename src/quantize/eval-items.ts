/**
 * A `nanomind eval` question set (a folder with eval.jsonl: an image, a typed question or the WAV of a
 * spoken one, and the answer) as quantize's eval items: the prompt's token ids and the raw encoder
 * inputs, prepared exactly as the runtime prepares them (chat template, placeholder expansion, image and
 * audio preprocessing), and the answer's token ids followed by the first stop id, so an exact match
 * means the same answer and nothing after it.
 */
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { EMBEDDED_EVAL_SET } from '../eval/embedded.js';
import { loadEvalSet as loadQuestionSet } from '../eval/index.js';
import { fail } from '../errors.js';
import { openModel, prepareTurn, type MediaItem } from '../run/model.js';
import type { EvalItem } from './greedy.js';

/** `builtin` names the embedded model's held-out set. */
export const questionSetDir = (set: string): string => (set === 'builtin' ? EMBEDDED_EVAL_SET : set);

export async function evalItemsFromQuestions(bricksDir: string, setDir: string): Promise<EvalItem[]> {
  const questions = await loadQuestionSet(setDir);
  const m = await openModel(bricksDir);
  try {
    if (!m.tokenizer) throw fail('E_QUANT_EVAL', `${bricksDir}: no tokenizer.json, so the questions of ${setDir} cannot be encoded`);
    const stop = m.set.eosTokenIds[0];
    if (stop === undefined) throw fail('E_QUANT_EVAL', `${bricksDir}: no eos token, so an exact answer cannot be told from a longer one`);
    const items: EvalItem[] = [];
    for (const q of questions) {
      const images: MediaItem[] = q.image ? [{ file: join(setDir, q.image) }] : [];
      const audio: MediaItem[] = q.modality === 'spoken' && q.audio ? [{ file: join(setDir, q.audio) }] : [];
      const turn = await prepareTurn(m, { prompt: q.modality === 'spoken' ? '' : q.question, images, audio });
      const media: Record<string, ort.Tensor> = {};
      for (const [kind, list] of [['vision', images], ['audio', audio]] as const) {
        if (!list.length) continue;
        const t = await m.mediaInput(kind === 'vision' ? 'image' : 'audio', list[0]!);
        media[m.set.encoder(kind).input.name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, [...t.dims]);
      }
      items.push({
        prompt: { inputIds: turn.inputIds.map(BigInt), media },
        answer: [...m.tokenizer.encode(q.answer, { addSpecialTokens: false }), stop],
      });
    }
    return items;
  } finally {
    await m.close();
  }
}
