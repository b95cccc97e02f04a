/**
 * Whether a brick set's decoder keeps a KV cache (`past_key_values.*` in, `present.*` out). A decoder
 * without one recomputes every position for every generated token; partition, compile, run and chat
 * all say so with the same one-line notice (run/chat via the runtime, hence this lives in formats/).
 */
interface BrickLike { readonly name: string; readonly kind: string; readonly inputs: readonly { readonly name: string }[] }

const PAST = /^past_key_values[._]|^past\./;

export const hasKvCache = (decoder: BrickLike): boolean => decoder.inputs.some((i) => PAST.test(i.name));

/** The notice for a decoder brick without a KV cache; undefined when every decoder has one (or there is none). */
export function noKvCacheNotice(bricks: readonly BrickLike[]): string | undefined {
  const d = bricks.find((b) => b.kind === 'decoder' && !hasKvCache(b));
  return d && `decoder '${d.name}' has no KV cache (no past_key_values inputs): every turn re-prefills the whole conversation and every new token recomputes all positions, so generation slows as the text grows; export it with past key values (optimum with-past, onnx-community decoder_model_merged) or partition a monolithic export with --add-kv-cache`;
}
