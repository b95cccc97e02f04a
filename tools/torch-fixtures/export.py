#!/usr/bin/env python3
"""Export tiny monolithic multimodal ONNX models with PyTorch's exporter.

These are committed test fixtures for nanomind: real `torch.onnx.export`
graphs (Shape/Gather/Unsqueeze/Concat chains, transposed `onnx::MatMul_*`
weights, Where/CumSum embedding merges) with random weights.

Usage:  python3 tools/torch-fixtures/export.py [OUT_DIR]
        (OUT_DIR defaults to test/fixtures/torch relative to the repo root)

Only needs torch (tested with Debian's python3-torch 1.13) and numpy; the
python `onnx` package is not required.
"""

import json
import math
import os
import sys

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

OPSET = 17
VOCAB = 320
IMAGE_TOKEN_ID = 319
AUDIO_TOKEN_ID = 318
LM_HIDDEN = 64
LM_LAYERS = 2
LM_HEADS = 4
LM_KV_HEADS = 2
LM_HEAD_DIM = 16
LM_INTERMEDIATE = 128
ROPE_THETA = 10000.0
RMS_EPS = 1e-6

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "test", "fixtures", "torch")


# ---------------------------------------------------------------------------
# Encoder blocks (SigLIP / Whisper style, pre-LN)
# ---------------------------------------------------------------------------


class EncoderAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, s, -1)
        return self.out_proj(out)


class EncoderMLP(nn.Module):
    def __init__(self, hidden, intermediate, approximate):
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate)
        self.fc2 = nn.Linear(intermediate, hidden)
        self.approximate = approximate

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class EncoderLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate, approximate):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attn = EncoderAttention(hidden, heads)
        self.layer_norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = EncoderMLP(hidden, intermediate, approximate)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        x = x + self.mlp(self.layer_norm2(x))
        return x


class SiglipVisionTower(nn.Module):
    """image [B,3,32,32] -> patch 8 -> 16 patches x hidden 32."""

    def __init__(self, hidden=32, layers=2, heads=4, image=32, patch=8):
        super().__init__()
        self.num_patches = (image // patch) ** 2
        self.patch_embedding = nn.Conv2d(3, hidden, kernel_size=patch, stride=patch)
        self.position_embedding = nn.Embedding(self.num_patches, hidden)
        self.register_buffer(
            "position_ids", torch.arange(self.num_patches).unsqueeze(0), persistent=False
        )
        self.layers = nn.ModuleList(
            [EncoderLayer(hidden, heads, hidden * 2, "tanh") for _ in range(layers)]
        )
        self.post_layernorm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, pixel_values):
        x = self.patch_embedding(pixel_values)  # B,C,4,4
        x = x.flatten(2).transpose(1, 2)  # B,16,C
        x = x + self.position_embedding(self.position_ids)
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)


class WhisperAudioTower(nn.Module):
    """input_features [B,16,64] -> conv stride 2 -> 32 frames x hidden 32."""

    def __init__(self, mels=16, hidden=32, layers=2, heads=4, positions=32):
        super().__init__()
        self.conv1 = nn.Conv1d(mels, hidden, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(positions, hidden)
        self.register_buffer(
            "position_ids", torch.arange(positions).unsqueeze(0), persistent=False
        )
        self.layers = nn.ModuleList(
            [EncoderLayer(hidden, heads, hidden * 2, "none") for _ in range(layers)]
        )
        self.layer_norm = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, input_features):
        x = F.gelu(self.conv1(input_features))
        x = F.gelu(self.conv2(x))
        x = x.transpose(1, 2)  # B,32,C
        x = x + self.embed_positions(self.position_ids)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


# ---------------------------------------------------------------------------
# Qwen2-style decoder
# ---------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, hidden, eps=RMS_EPS):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(hidden))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, theta=ROPE_THETA):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids):
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq  # B,S,D/2
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)  # B,1,S,D


class Qwen2Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = LM_HEADS
        self.kv_heads = LM_KV_HEADS
        self.head_dim = LM_HEAD_DIM
        self.q_proj = nn.Linear(LM_HIDDEN, LM_HEADS * LM_HEAD_DIM, bias=True)
        self.k_proj = nn.Linear(LM_HIDDEN, LM_KV_HEADS * LM_HEAD_DIM, bias=True)
        self.v_proj = nn.Linear(LM_HIDDEN, LM_KV_HEADS * LM_HEAD_DIM, bias=True)
        self.o_proj = nn.Linear(LM_HEADS * LM_HEAD_DIM, LM_HIDDEN, bias=False)

    def repeat_kv(self, x):
        # (B, KV, S, D) -> (B, H, S, D) via expand + reshape (HF repeat_kv)
        b, kv, s, d = x.shape
        rep = self.heads // self.kv_heads
        x = x[:, :, None, :, :].expand(b, kv, rep, s, d)
        return x.reshape(b, kv * rep, s, d)

    def forward(self, x, cos, sin, bias):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = self.repeat_kv(k)
        v = self.repeat_kv(v)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        attn = torch.softmax(scores + bias, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(out)


class Qwen2MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(LM_HIDDEN, LM_INTERMEDIATE, bias=False)
        self.up_proj = nn.Linear(LM_HIDDEN, LM_INTERMEDIATE, bias=False)
        self.down_proj = nn.Linear(LM_INTERMEDIATE, LM_HIDDEN, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = RMSNorm(LM_HIDDEN)
        self.self_attn = Qwen2Attention()
        self.post_attention_layernorm = RMSNorm(LM_HIDDEN)
        self.mlp = Qwen2MLP()

    def forward(self, x, cos, sin, bias):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, bias)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class Qwen2LanguageModel(nn.Module):
    """Takes inputs_embeds (the merged sequence), returns logits."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, LM_HIDDEN)
        self.rotary_emb = RotaryEmbedding(LM_HEAD_DIM)
        self.layers = nn.ModuleList([Qwen2DecoderLayer() for _ in range(LM_LAYERS)])
        self.norm = RMSNorm(LM_HIDDEN)
        self.lm_head = nn.Linear(LM_HIDDEN, VOCAB, bias=False)

    def forward(self, inputs_embeds, attention_mask):
        s = inputs_embeds.shape[1]
        # positions from the padding mask, as HF generate() does
        position_ids = attention_mask.cumsum(-1) - 1
        position_ids = position_ids.masked_fill(attention_mask == 0, 1)
        cos, sin = self.rotary_emb(position_ids)
        # causal & padding mask -> additive bias (B,1,S,S)
        idx = torch.arange(s, device=inputs_embeds.device)
        causal = idx.unsqueeze(0) <= idx.unsqueeze(1)  # S,S (key <= query)
        allowed = causal[None, None, :, :] & (attention_mask[:, None, None, :] != 0)
        bias = torch.where(
            allowed,
            torch.zeros((), dtype=inputs_embeds.dtype),
            torch.full((), torch.finfo(inputs_embeds.dtype).min, dtype=inputs_embeds.dtype),
        )
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin, bias)
        return self.lm_head(self.norm(x))


def randomize_norms(model):
    """LayerNorm defaults (ones/zeros) are identical across layers, which makes
    the exporter dedupe them into one initializer + Identity nodes; random
    affine params keep every norm distinct and make the weights meaningful."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
    return model


def merge_features(input_ids, text_embeds, features, token_id):
    """Replace rows of text_embeds where input_ids == token_id with the
    feature rows in order (cumsum index + Where, as HF exports end up)."""
    mask = input_ids == token_id  # B,S
    idx = mask.to(torch.int64).cumsum(-1) - 1
    idx = idx.clamp(min=0)  # B,S  index into features' token axis
    idx = idx.unsqueeze(-1).expand(-1, -1, features.shape[-1])
    gathered = torch.gather(features, 1, idx)  # B,S,H
    return torch.where(mask.unsqueeze(-1), gathered, text_embeds)


# ---------------------------------------------------------------------------
# Top-level multimodal models
# ---------------------------------------------------------------------------


class LlavaTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision_tower = SiglipVisionTower()
        self.multi_modal_projector = LlavaProjector()
        self.language_model = Qwen2LanguageModel()

    def forward(self, pixel_values, input_ids, attention_mask):
        feats = self.multi_modal_projector(self.vision_tower(pixel_values))
        embeds = self.language_model.embed_tokens(input_ids)
        embeds = merge_features(input_ids, embeds, feats, IMAGE_TOKEN_ID)
        return self.language_model(embeds, attention_mask)


class LlavaProjector(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear_1 = nn.Linear(32, LM_HIDDEN)
        self.linear_2 = nn.Linear(LM_HIDDEN, LM_HIDDEN)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class AudioProjector(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32, LM_HIDDEN)

    def forward(self, x):
        return self.linear(x)


class AudioLlmTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio_tower = WhisperAudioTower()
        self.multi_modal_projector = AudioProjector()
        self.language_model = Qwen2LanguageModel()

    def forward(self, input_features, input_ids, attention_mask):
        feats = self.multi_modal_projector(self.audio_tower(input_features))
        embeds = self.language_model.embed_tokens(input_ids)
        embeds = merge_features(input_ids, embeds, feats, AUDIO_TOKEN_ID)
        return self.language_model(embeds, attention_mask)


# ---------------------------------------------------------------------------
# Deterministic sample inputs (reproducible from the formulas in meta.json)
# ---------------------------------------------------------------------------


def det_float(shape):
    """x[i] = sin(0.1 * i) over the flattened row-major index."""
    n = 1
    for d in shape:
        n *= d
    return torch.sin(0.1 * torch.arange(n, dtype=torch.float64)).float().reshape(shape)


def sample_ids(seq, first, count, token_id):
    """ids[p] = (7 * p + 3) % 300 except feature tokens at [first, first+count)."""
    ids = [(7 * p + 3) % 300 for p in range(seq)]
    for p in range(first, first + count):
        ids[p] = token_id
    return ids


def reference(model, feature_tensor, ids, mask):
    input_ids = torch.tensor([ids], dtype=torch.int64)
    attention_mask = torch.tensor([mask], dtype=torch.int64)
    with torch.no_grad():
        logits = model(feature_tensor, input_ids, attention_mask)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "logits_shape": list(logits.shape),
        # first 8 logits at a few positions, plus checksums
        "logits_rows": {
            str(p): [round(float(v), 6) for v in logits[0, p, :8]]
            for p in (0, len(ids) // 2, len(ids) - 1)
        },
        "logits_sum": round(float(logits.double().sum()), 4),
        "logits_abs_sum": round(float(logits.double().abs().sum()), 4),
    }


def export(model, args, path, feature_input, feature_shape):
    input_names = [feature_input, "input_ids", "attention_mask"]
    dynamic_axes = {
        feature_input: {0: "batch_size"},
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    torch.onnx.export(
        model,
        args,
        path,
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=input_names,
        output_names=["logits"],
        dynamic_axes=dynamic_axes,
    )


def lm_meta():
    return {
        "hidden_size": LM_HIDDEN,
        "vocab_size": VOCAB,
        "num_layers": LM_LAYERS,
        "num_attention_heads": LM_HEADS,
        "num_key_value_heads": LM_KV_HEADS,
        "head_dim": LM_HEAD_DIM,
        "intermediate_size": LM_INTERMEDIATE,
        "rope_theta": ROPE_THETA,
        "rms_norm_eps": RMS_EPS,
    }


def main():
    warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
    out_dir = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    meta = {
        "generator": "tools/torch-fixtures/export.py",
        "torch_version": torch.__version__,
        "opset": OPSET,
        "seed": 0,
        "sample_input_formulas": {
            "float_features": "x[i] = sin(0.1 * i) over the flattened row-major index (float32)",
            "input_ids": "ids[p] = (7*p + 3) % 300, except feature tokens at [first, first+count)",
        },
        "feature_token_range": "half-open [start, end) positions of the feature tokens in input_ids",
        "exporter_notes": [
            "Linear layers on 3-D activations export as MatMul (+ Add for bias), never Gemm; "
            "every Linear weight is constant-folded to a transposed initializer named onnx::MatMul_<n>",
            "node names carry module scopes: /vision_tower|audio_tower/..., /multi_modal_projector/..., /language_model/...",
            "the token embedding is called from the top-level forward, so its node is /embed_tokens/Gather "
            "(initializer language_model.embed_tokens.weight), not under /language_model/",
            "the feature merge (Equal, Cast, CumSum, Sub, Clip, Shape/Gather/Concat/Reshape, Expand, "
            "GatherElements, Where) is in the top-level scope (/Equal, /Where_1, ...)",
            "some small Constant nodes produced by exporter helpers have no scope (named Constant_<n>, "
            "outputs onnx::Unsqueeze_<n> / onnx::Where_<n>); assign them by their consumers",
        ],
        "models": {},
    }

    # ---- LLaVA-OneVision-like -------------------------------------------
    torch.manual_seed(0)
    llava = randomize_norms(LlavaTiny()).eval()
    seq, first, n_img = 24, 2, 16
    pix = det_float((1, 3, 32, 32))
    ids = sample_ids(seq, first, n_img, IMAGE_TOKEN_ID)
    mask = [1] * seq
    path = os.path.join(out_dir, "llava_tiny.onnx")
    export(
        llava,
        (pix, torch.tensor([ids]), torch.tensor([mask])),
        path,
        "pixel_values",
        (1, 3, 32, 32),
    )
    padded_mask = [0, 0] + [1] * (seq - 2)
    padded_ids = [0, 0] + ids[:-2]
    meta["models"]["llava_tiny"] = {
        "file": "llava_tiny.onnx",
        "kind": "llava-onevision-like",
        "inputs": [
            {"name": "pixel_values", "dtype": "float32", "shape": ["batch_size", 3, 32, 32]},
            {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
        ],
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": ["batch_size", "sequence_length", VOCAB]}
        ],
        "image_token_id": IMAGE_TOKEN_ID,
        "num_feature_tokens": n_img,
        "feature_token_id": IMAGE_TOKEN_ID,
        "encoder": {"hidden_size": 32, "num_layers": 2, "num_heads": 4,
                    "image_size": 32, "patch_size": 8, "num_patches": 16},
        "projector": {"in": 32, "out": LM_HIDDEN, "layers": 2},
        "language_model": lm_meta(),
        "bricks": {
            "vision_tower": "/vision_tower/",
            "multi_modal_projector": "/multi_modal_projector/",
            "language_model": "/language_model/",
        },
        "reference": [
            reference(llava, pix, ids, mask),
            reference(llava, pix, padded_ids, padded_mask),
        ],
        "reference_feature_input": {"name": "pixel_values", "formula": "float_features"},
    }
    meta["models"]["llava_tiny"]["reference"][0]["feature_token_range"] = [first, first + n_img]
    meta["models"]["llava_tiny"]["reference"][1]["feature_token_range"] = [first + 2, first + 2 + n_img]

    # ---- Qwen2-Audio / Whisper-like -------------------------------------
    torch.manual_seed(0)
    audio = randomize_norms(AudioLlmTiny()).eval()
    seq, first, n_aud = 40, 3, 32
    feats = det_float((1, 16, 64))
    ids = sample_ids(seq, first, n_aud, AUDIO_TOKEN_ID)
    mask = [1] * seq
    path = os.path.join(out_dir, "audio_llm_tiny.onnx")
    export(
        audio,
        (feats, torch.tensor([ids]), torch.tensor([mask])),
        path,
        "input_features",
        (1, 16, 64),
    )
    meta["models"]["audio_llm_tiny"] = {
        "file": "audio_llm_tiny.onnx",
        "kind": "qwen2-audio-like",
        "inputs": [
            {"name": "input_features", "dtype": "float32", "shape": ["batch_size", 16, 64]},
            {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch_size", "sequence_length"]},
        ],
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": ["batch_size", "sequence_length", VOCAB]}
        ],
        "audio_token_id": AUDIO_TOKEN_ID,
        "num_feature_tokens": n_aud,
        "feature_token_id": AUDIO_TOKEN_ID,
        "encoder": {"hidden_size": 32, "num_layers": 2, "num_heads": 4,
                    "num_mel_bins": 16, "num_frames": 64, "num_positions": 32},
        "projector": {"in": 32, "out": LM_HIDDEN, "layers": 1},
        "language_model": lm_meta(),
        "bricks": {
            "audio_tower": "/audio_tower/",
            "multi_modal_projector": "/multi_modal_projector/",
            "language_model": "/language_model/",
        },
        "reference": [reference(audio, feats, ids, mask)],
        "reference_feature_input": {"name": "input_features", "formula": "float_features"},
    }
    meta["models"]["audio_llm_tiny"]["reference"][0]["feature_token_range"] = [first, first + n_aud]

    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    for name in ("llava_tiny.onnx", "audio_llm_tiny.onnx", "meta.json"):
        p = os.path.join(out_dir, name)
        print(f"{p}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
