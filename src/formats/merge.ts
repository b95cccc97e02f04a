/**
 * The feature merges a `merge` connection in bricks.json describes (transformers.js semantics), shared by
 * partition's verification and the runtime so both read the manifest the same way:
 * - `replace-rows`: encoder feature rows replace the rows of placeholder tokens in the embedding
 *   sequence, in order;
 * - `prepend`: the feature rows go in front of the token rows, and the attention mask gets as many ones
 *   in front (Florence-2's _merge_input_ids_with_image_features).
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

/** `prepend`: [features; embeds] and [1 × feature rows; mask], batch 1, rows of `hidden`. */
export function prependRows(features: Float32Array, embeds: Float32Array, mask: ArrayLike<number | bigint>, hidden: number): { embeds: Float32Array; mask: BigInt64Array; rows: number } {
  const rows = features.length / hidden;
  if (!Number.isInteger(rows) || embeds.length / hidden !== mask.length)
    throw fail('E_MERGE_SHAPE', `prepend merge: ${features.length} feature values and ${embeds.length} embedding values are not whole rows of ${hidden} (mask of ${mask.length})`);
  const out = new Float32Array(features.length + embeds.length);
  out.set(features);
  out.set(embeds, features.length);
  const m = new BigInt64Array(rows + mask.length).fill(1n);
  for (let i = 0; i < mask.length; i++) m[rows + i] = BigInt(mask[i]!);
  return { embeds: out, mask: m, rows: rows + mask.length };
}
