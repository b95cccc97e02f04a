/**
 * The feature merge a `merge` connection in bricks.json describes: encoder feature rows replace the
 * rows of placeholder tokens in the embedding sequence, in order (transformers.js semantics). Shared by
 * partition's verification and the runtime so both read the manifest the same way.
 */
import { fail } from '../errors.js';

/**
 * Overwrites, in place, the rows of `embeds` ([seq, hidden] row-major) whose token equals
 * `placeholder` with consecutive rows of `features`. Returns the number of rows replaced.
 */
export function replacePlaceholderRows(embeds: Float32Array, tokenIds: ArrayLike<number | bigint>, placeholder: number,
  features: Float32Array, hidden: number): number {
  const rows = features.length / hidden;
  if (!Number.isInteger(rows)) throw fail('E_MERGE_SHAPE', `feature tensor of ${features.length} values is not a whole number of rows of ${hidden}`);
  let slots = 0;
  for (let i = 0; i < tokenIds.length; i++) if (Number(tokenIds[i]) === placeholder) slots++;
  if (slots !== rows)
    throw fail('E_MERGE_COUNT', `the prompt has ${slots} placeholder token(s) (id ${placeholder}) but the encoder produced ${rows} feature rows`,
      { hint: 'expand each image/audio placeholder to the number of feature tokens the encoder emits' });
  let r = 0;
  for (let i = 0; i < tokenIds.length; i++)
    if (Number(tokenIds[i]) === placeholder) embeds.set(features.subarray(r * hidden, (r + 1) * hidden), i * hidden), r++;
  return rows;
}
