#!/usr/bin/env python3
"""Export the trained shapes model to models/shapes-vlm/ and write its held-out set.

Usage: /usr/bin/python3 tools/shapes-vlm/export.py [--work DIR] [--out DIR]

Writes, from WORK/model.pt (train.py):
  onnx/vision_encoder.onnx         pixel_values [b,3,72,72] -> image_features [b,9,128]
  onnx/audio_encoder.onnx          input_features [b,40,300] -> audio_features [b,25,128]
  onnx/embed_tokens.onnx           input_ids [b,s] -> inputs_embeds [b,s,128]
  onnx/decoder_model_merged.onnx   inputs_embeds, attention_mask [b,total], position_ids [b,s],
                                   past_key_values.{i}.key|value [b,2,past,32] -> logits, present.{i}.*
  monolithic/model.onnx            pixel_values, input_features, input_ids, attention_mask -> logits
                                   (both encoders and the merges in-graph)
  config.json, preprocessor_config.json, tokenizer.json, tokenizer_config.json, generation_config.json
  eval/eval.jsonl + eval/images/*.png + eval/audio/*.wav   (held-out scenes and voices, other seeds)
  eval/conversations.jsonl + eval/images/conv-*.png   40 typed 5-turn conversations on unseen scenes
  eval/reference.json              PyTorch's greedy answers on the eval set and, turn by turn (its own
                                   earlier answers in the history, as chat keeps them), on the conversations,
                                   read back from those files
  calib/eval.jsonl + calib/...     32 more questions (other seeds) for `nanomind quantize --calib builtin`

All graphs: torch.onnx.export, opset 17, constant folding, fp32, weights inline.
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from model import CONFIG, ShapesVLM, count_params, merge_features, position_ids_from_mask  # noqa: E402
from tokenizer import CHAT_TEMPLATE, Tokenizer, render_conversation, render_prompt  # noqa: E402
from train import DEFAULT_WORK, MAX_NEW_TOKENS, REPO, Task, evaluate, evaluate_conversations, report, report_conversations  # noqa: E402

OPSET = 17
DEFAULT_OUT = os.path.join(REPO, "models", "shapes-vlm")
EVAL_SEED = 20250101
CONVERSATION_SEED = 20250303
CALIB_SEED = 20250202


class VisionEncoder(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.vision_tower, self.multi_modal_projector = m.vision_tower, m.multi_modal_projector

    def forward(self, pixel_values):
        return self.multi_modal_projector(self.vision_tower(pixel_values))


class AudioEncoder(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.audio_tower, self.multi_modal_projector = m.audio_tower, m.audio_projector

    def forward(self, input_features):
        return self.multi_modal_projector(self.audio_tower(input_features))


class EmbedTokens(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.embed_tokens = m.language_model.embed_tokens

    def forward(self, input_ids):
        return self.embed_tokens(input_ids)


class Decoder(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.language_model = m.language_model
        self.layers = len(m.language_model.layers)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.layers)]
        logits, present = self.language_model(inputs_embeds, attention_mask, position_ids, pairs)
        return (logits,) + tuple(t for kv in present for t in kv)


class MonolithicLLM(nn.Module):
    """pixel_values, input_features, input_ids, attention_mask -> logits: both encoders, their
    projectors (HF names: vision_tower / multi_modal_projector, audio_tower / audio_projector) and the
    merges in one graph, as a monolithic export of a vision+audio LMM would be. A prompt without
    <audio> rows (a typed question) leaves the audio features unused."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values, input_features, input_ids, attention_mask):
        embeds = self.m.embed(input_ids, pixel_values, input_features)
        logits, _ = self.m.language_model(embeds, attention_mask, position_ids_from_mask(attention_mask))
        return logits


def onnx_export(module, args, path, inputs, outputs, dynamic):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, export_params=True, opset_version=OPSET, do_constant_folding=True,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic)
    return os.path.getsize(path)


def export_graphs(model, task, out):
    t = CONFIG["text"]
    a = CONFIG["audio"]
    sizes = {}
    s = CONFIG["vision"]["image_size"]
    px = torch.zeros(1, 3, s, s)
    feats = torch.zeros(1, a["mel_bins"], a["frames"])
    sizes["onnx/vision_encoder.onnx"] = onnx_export(
        VisionEncoder(model), (px,), os.path.join(out, "onnx", "vision_encoder.onnx"), ["pixel_values"], ["image_features"],
        {"pixel_values": {0: "batch_size"}, "image_features": {0: "batch_size"}})
    sizes["onnx/audio_encoder.onnx"] = onnx_export(
        AudioEncoder(model), (feats,), os.path.join(out, "onnx", "audio_encoder.onnx"), ["input_features"], ["audio_features"],
        {"input_features": {0: "batch_size"}, "audio_features": {0: "batch_size"}})
    ids = torch.tensor([[task.tok.pad_id, 5, 6]])
    sizes["onnx/embed_tokens.onnx"] = onnx_export(
        EmbedTokens(model), (ids,), os.path.join(out, "onnx", "embed_tokens.onnx"), ["input_ids"], ["inputs_embeds"],
        {"input_ids": {0: "batch_size", 1: "sequence_length"}, "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})

    # trace with a non-empty past so the cache Concat is recorded; past length 0 works at run time
    past_len, new = 3, 2
    past, names_in, names_out = [], [], []
    dyn = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(t["layers"]):
        for kv in ("key", "value"):
            past.append(torch.zeros(1, t["kv_heads"], past_len, t["head_dim"]))
            names_in.append(f"past_key_values.{i}.{kv}")
            names_out.append(f"present.{i}.{kv}")
            dyn[names_in[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            dyn[names_out[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    mask = torch.ones(1, past_len + new, dtype=torch.int64)
    sizes["onnx/decoder_model_merged.onnx"] = onnx_export(
        Decoder(model), (torch.zeros(1, new, t["hidden"]), mask, torch.tensor([[past_len, past_len + 1]])) + tuple(past),
        os.path.join(out, "onnx", "decoder_model_merged.onnx"),
        ["inputs_embeds", "attention_mask", "position_ids"] + names_in, ["logits"] + names_out, dyn)

    # traced on a spoken prompt (audio and image rows); a typed prompt just has no <audio> rows
    prompt = torch.tensor([task.prompt_ids(None, True)])
    sizes["monolithic/model.onnx"] = onnx_export(
        MonolithicLLM(model), (px, feats, prompt, torch.ones_like(prompt)), os.path.join(out, "monolithic", "model.onnx"),
        ["pixel_values", "input_features", "input_ids", "attention_mask"], ["logits"],
        {"pixel_values": {0: "batch_size"}, "input_features": {0: "batch_size"}, "input_ids": {0: "batch_size", 1: "sequence_length"},
         "attention_mask": {0: "batch_size", 1: "sequence_length"}, "logits": {0: "batch_size", 1: "sequence_length"}})
    return sizes


def config_json(tok, n_img, n_aud):
    v, a, t = CONFIG["vision"], CONFIG["audio"], CONFIG["text"]
    return {
        "_name_or_path": "nanomind/shapes-vlm",
        "architectures": ["ShapesVlmForConditionalGeneration"],
        "model_type": "shapes_vlm",
        "image_token_index": tok.image_id,
        "audio_token_index": tok.audio_id,
        "image_seq_length": n_img,
        "audio_seq_length": n_aud,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": t["hidden"], "intermediate_size": t["intermediate"], "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"], "num_key_value_heads": t["kv_heads"], "head_dim": t["head_dim"],
            "vocab_size": tok.vocab_size, "max_position_embeddings": t["max_positions"], "rms_norm_eps": t["rms_eps"],
            "rope_theta": t["rope_theta"], "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
            "bos_token_id": tok.pad_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
        },
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": v["hidden"], "intermediate_size": v["intermediate"],
            "image_size": v["image_size"], "patch_size": v["patch_size"], "num_channels": 3,
            "num_hidden_layers": v["layers"], "num_attention_heads": v["heads"], "layer_norm_eps": v["ln_eps"],
            "hidden_act": "gelu_pytorch_tanh", "pooling": f"avg {v['pool']}x{v['pool']} over the patch grid",
        },
        "audio_config": {
            "model_type": "qwen2_audio_encoder", "d_model": a["hidden"], "encoder_layers": a["layers"],
            "encoder_attention_heads": a["heads"], "encoder_ffn_dim": a["intermediate"], "num_mel_bins": a["mel_bins"],
            "max_source_positions": a["frames"] // 2, "activation_function": "gelu", "layer_norm_eps": a["ln_eps"],
            "avg_pool": a["pool"],
        },
    }


def preprocessor_json(task):
    s = CONFIG["vision"]["image_size"]
    return {
        "processor_class": "ShapesVlmProcessor",
        "image_processor_type": "SiglipImageProcessor",
        "do_resize": True, "size": {"height": s, "width": s}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "num_image_tokens": task.n_img,
        **task.fe.config(),
        "num_audio_tokens": task.n_aud,
    }


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def eval_examples(task, out):
    """The committed eval set, read back from its PNG / WAV files (what the runtime will read)."""
    from PIL import Image
    rows = data.write_eval(os.path.join(out, "eval"), seed=EVAL_SEED)
    ex = []
    for r in rows:
        e = dict(r)
        e["image"] = np.array(Image.open(os.path.join(out, "eval", r["image"])).convert("RGB"))
        if "audio" in r:
            e["feats"] = task.fe(data.read_wav(os.path.join(out, "eval", r["audio"])))
        e["row"] = r
        ex.append(e)
    return ex


def conversation_examples(out):
    """The committed 5-turn conversations (written after eval/, which write_eval recreates), images
    read back from their PNG files."""
    from PIL import Image
    rows = data.write_conversations(os.path.join(out, "eval"), seed=CONVERSATION_SEED)
    return [{"row": r, "image": np.array(Image.open(os.path.join(out, "eval", r["image"])).convert("RGB")),
             "turns": [(t["question"], t["answer"], t["type"]) for t in r["turns"]]} for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=DEFAULT_WORK)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ckpt = torch.load(os.path.join(args.work, "model.pt"))
    task = Task(args.work, ckpt.get("order"))
    if [tuple(m) for m in ckpt["merges"]] != task.tok.merges:
        sys.exit("the checkpoint's tokenizer differs from tokenizer.py's; retrain")
    model = ShapesVLM(ckpt["config"], task.tok.vocab_size, task.tok.image_id, task.tok.audio_id)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    out = args.out
    os.makedirs(out, exist_ok=True)

    sizes = export_graphs(model, task, out)
    write_json(os.path.join(out, "config.json"), config_json(task.tok, task.n_img, task.n_aud))
    write_json(os.path.join(out, "preprocessor_config.json"), preprocessor_json(task))
    write_json(os.path.join(out, "tokenizer.json"), task.tok.tokenizer_json())
    write_json(os.path.join(out, "tokenizer_config.json"), task.tok.tokenizer_config_json())
    write_json(os.path.join(out, "generation_config.json"), {
        "bos_token_id": task.tok.pad_id, "eos_token_id": task.tok.eos_id, "pad_token_id": task.tok.pad_id,
        "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS})

    # a small calibration set for `nanomind quantize --calib builtin`: other scenes and voices than eval/
    data.write_eval(os.path.join(out, "calib"), seed=CALIB_SEED, n_typed=16, n_spoken=16)
    ex = eval_examples(task, out)
    preds = evaluate(model, task, ex)
    acc = report(preds, f"eval set (seed {EVAL_SEED}, {len(ex)} examples, read back from PNG/WAV)")
    convs = conversation_examples(out)
    conv_prompts = []
    conv_answers = evaluate_conversations(model, task, convs, prompts_out=conv_prompts)
    conv_acc = report_conversations(convs, conv_answers, f"{len(convs)} conversations (seed {CONVERSATION_SEED}, read back from PNG)")
    params = {n: count_params(getattr(model, n)) for n in
              ("vision_tower", "multi_modal_projector", "audio_tower", "audio_projector", "language_model")}
    params["language_model.embed_tokens"] = count_params(model.language_model.embed_tokens)
    write_json(os.path.join(out, "eval", "reference.json"), {
        "generator": "tools/shapes-vlm/export.py",
        "torch_version": torch.__version__,
        "decoding": "greedy, batched with left padding and KV cache, stop at <|im_end|> or "
                    f"{MAX_NEW_TOKENS} new tokens; answer = decode(ids before <|im_end|>).strip()",
        "prompt_example": {"typed": render_prompt("how many shapes are there?"), "spoken": render_prompt(None, True)},
        # tokenizer.py's ids for every string of the task (and the two prompts): @huggingface/tokenizers must agree
        "token_ids": {s: task.tok.encode(s) for s in data.all_texts() + [
            render_prompt("how many shapes are there?"), render_prompt(None, True),
            render_conversation(["how many shapes are there?", "describe the image."], ["2"])]},
        "accuracy": acc,
        "params": params,
        "bytes": sizes,
        "answers": {e["id"]: p for e, p in preds},
        "conversation_decoding": "per turn as above, on the whole conversation rendered by the chat template with "
                                 "the model's own earlier answers verbatim (before .strip()) in the history",
        "conversation_accuracy": conv_acc,
        "conversation_answers": {c["row"]["id"]: a for c, a in zip(convs, conv_answers)},
        # the ids PyTorch fed on each turn of the first conversation (placeholders expanded): chat must feed the same
        "conversation_prompt_ids": {convs[0]["row"]["id"]: conv_prompts[0]},
    })
    for k, v in sizes.items():
        print(f"{k}: {v:,} bytes")
    print(f"params: {params}")


if __name__ == "__main__":
    main()
