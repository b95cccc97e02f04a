/**
 * The sizes every decoder-only transformer description in nanomind shares (config.json's hidden_size,
 * num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, intermediate_size, vocab_size,
 * rms_norm_eps): the native engine's packed config and the fixtures' model configs extend it.
 */
export interface DecoderDims {
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly rmsEps: number;
}
