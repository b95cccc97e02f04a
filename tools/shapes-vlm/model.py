"""The tiny shapes model: a LLaVA-style image path and a Qwen2-Audio-style audio path into one
Qwen2-style decoder.

    pixel_values [B,3,72,72] -> vision_tower (SigLIP-like ViT on 8x8-pixel patches with a conv stem,
                             81 patches, 3x3 avg pool -> 9 tokens, one per cell of the 3x3 scene grid)
                             -> multi_modal_projector (Linear, GELU, Linear)     -> image_features [B,9,H]
    input_features [B,40,300] -> audio_tower (Whisper-like convs, but both k3 s2 -> 75 frames, encoder
                             layers, avg pool 3 -> 25, LayerNorm) -> audio_projector (Linear) -> [B,25,H]
    input_ids -> embed_tokens; feature rows replace the <image> / <audio> placeholder rows in order;
    decoder: RMSNorm, GQA attention with RoPE (q/k/v bias, no o bias), SwiGLU MLP, final norm, lm_head.

Module names follow Hugging Face (vision_tower / multi_modal_projector / language_model) so PyTorch's
exporter scopes the nodes the way nanomind's partitioner expects.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = {
    "vision": {"image_size": 72, "patch_size": 8, "stem": [16, 32, 64], "hidden": 96, "layers": 2, "heads": 4, "intermediate": 192,
               "pool": 3, "ln_eps": 1e-6},
    "audio": {"mel_bins": 40, "frames": 300, "hidden": 96, "layers": 2, "heads": 4, "intermediate": 192,
              "pool": 3, "ln_eps": 1e-5},
    "text": {"hidden": 128, "layers": 3, "heads": 4, "kv_heads": 2, "head_dim": 32, "intermediate": 256,
             "rms_eps": 1e-6, "rope_theta": 10000.0, "max_positions": 256},
}


def image_tokens(cfg):
    v = cfg["vision"]
    return (v["image_size"] // v["patch_size"] // v["pool"]) ** 2


def audio_tokens(cfg):
    a = cfg["audio"]
    return a["frames"] // 4 // a["pool"]


# ---------------------------------------------------------------------------------------------------
# Encoders (pre-LN transformer layers, SigLIP / Whisper naming)
# ---------------------------------------------------------------------------------------------------


class EncoderAttention(nn.Module):
    def __init__(self, hidden, heads, k_bias=True):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden, bias=k_bias)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        b, s, _ = x.shape
        split = lambda t: t.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        attn = torch.softmax(torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim), dim=-1)
        return self.out_proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, s, -1))


class VisionMLP(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate)
        self.fc2 = nn.Linear(intermediate, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisionLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(c["hidden"], eps=c["ln_eps"])
        self.self_attn = EncoderAttention(c["hidden"], c["heads"])
        self.layer_norm2 = nn.LayerNorm(c["hidden"], eps=c["ln_eps"])
        self.mlp = VisionMLP(c["hidden"], c["intermediate"])

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionTower(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.grid = c["image_size"] // c["patch_size"]
        self.pool = c["pool"]
        # a convolutional stem (3x3 convs, strides 2, 2, 1) before a 2x2 patchify: 8x8-pixel patches as
        # in a patch-8 ViT, but with the edge features a linear patchify learns slowly (Xiao et al. 2021,
        # "Early convolutions help transformers see better"); measured here: shape recognition in ~700
        # steps instead of several thousand
        s1, s2, s3 = c["stem"]
        self.stem_conv1 = nn.Conv2d(3, s1, kernel_size=3, stride=2, padding=1)
        self.stem_conv2 = nn.Conv2d(s1, s2, kernel_size=3, stride=2, padding=1)
        self.stem_conv3 = nn.Conv2d(s2, s3, kernel_size=3, stride=1, padding=1)
        self.patch_embedding = nn.Conv2d(s3, c["hidden"], kernel_size=c["patch_size"] // 4, stride=c["patch_size"] // 4)
        self.position_embedding = nn.Embedding(self.grid ** 2, c["hidden"])
        self.register_buffer("position_ids", torch.arange(self.grid ** 2).unsqueeze(0), persistent=False)
        self.layers = nn.ModuleList([VisionLayer(c) for _ in range(c["layers"])])
        self.post_layernorm = nn.LayerNorm(c["hidden"], eps=c["ln_eps"])

    def forward(self, pixel_values):
        x = F.gelu(self.stem_conv2(F.gelu(self.stem_conv1(pixel_values))))
        x = self.patch_embedding(F.gelu(self.stem_conv3(x)))  # B,C,9,9
        x = x.flatten(2).transpose(1, 2) + self.position_embedding(self.position_ids)
        for layer in self.layers:
            x = layer(x)
        x = self.post_layernorm(x)
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, self.grid, self.grid)
        return F.avg_pool2d(x, self.pool).flatten(2).transpose(1, 2)  # B,9,C: one token per 24x24 cell


class VisionProjector(nn.Module):
    def __init__(self, vision_hidden, hidden):
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class AudioLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(c["hidden"], eps=c["ln_eps"])
        self.self_attn = EncoderAttention(c["hidden"], c["heads"], k_bias=False)
        self.final_layer_norm = nn.LayerNorm(c["hidden"], eps=c["ln_eps"])
        self.fc1 = nn.Linear(c["hidden"], c["intermediate"])
        self.fc2 = nn.Linear(c["intermediate"], c["hidden"])

    def forward(self, x):
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class AudioTower(nn.Module):
    def __init__(self, c):
        super().__init__()
        positions = c["frames"] // 4
        # Whisper's conv1 has stride 1; stride 2 here halves the encoder's work (40 ms per position)
        self.conv1 = nn.Conv1d(c["mel_bins"], c["hidden"], kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(c["hidden"], c["hidden"], kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(positions, c["hidden"])
        self.register_buffer("position_ids", torch.arange(positions).unsqueeze(0), persistent=False)
        self.layers = nn.ModuleList([AudioLayer(c) for _ in range(c["layers"])])
        self.pool = c["pool"]
        self.layer_norm = nn.LayerNorm(c["hidden"], eps=c["ln_eps"])

    def forward(self, input_features):
        x = F.gelu(self.conv1(input_features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # B,75,C
        x = x + self.embed_positions(self.position_ids)
        for layer in self.layers:
            x = layer(x)
        x = F.avg_pool1d(x.transpose(1, 2), self.pool).transpose(1, 2)  # B,25,C (Qwen2-Audio's avg_pooler)
        return self.layer_norm(x)


class AudioProjector(nn.Module):
    def __init__(self, audio_hidden, hidden):
        super().__init__()
        self.linear = nn.Linear(audio_hidden, hidden)

    def forward(self, x):
        return self.linear(x)


# ---------------------------------------------------------------------------------------------------
# Qwen2-style decoder
# ---------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, hidden, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecoderAttention(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = t["heads"], t["kv_heads"], t["head_dim"]
        h = t["hidden"]
        self.q_proj = nn.Linear(h, self.heads * self.head_dim)
        self.k_proj = nn.Linear(h, self.kv_heads * self.head_dim)
        self.v_proj = nn.Linear(h, self.kv_heads * self.head_dim)
        self.o_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)

    def repeat_kv(self, x):
        b, kv, s, d = x.shape
        rep = self.heads // self.kv_heads
        return x[:, :, None, :, :].expand(b, kv, rep, s, d).reshape(b, kv * rep, s, d)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        scores = torch.matmul(q, self.repeat_kv(k).transpose(2, 3)) / math.sqrt(self.head_dim)
        attn = torch.softmax(scores + bias, dim=-1)
        out = torch.matmul(attn, self.repeat_kv(v)).transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(out), k, v


class DecoderMLP(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.gate_proj = nn.Linear(t["hidden"], t["intermediate"], bias=False)
        self.up_proj = nn.Linear(t["hidden"], t["intermediate"], bias=False)
        self.down_proj = nn.Linear(t["intermediate"], t["hidden"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.input_layernorm = RMSNorm(t["hidden"], t["rms_eps"])
        self.self_attn = DecoderAttention(t)
        self.post_attention_layernorm = RMSNorm(t["hidden"], t["rms_eps"])
        self.mlp = DecoderMLP(t)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, bias, past_k, past_v)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


def position_ids_from_mask(mask):
    """HF generate(): cumsum(mask) - 1, and 1 at padding."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


class LanguageModel(nn.Module):
    def __init__(self, t, vocab):
        super().__init__()
        self.t = t
        self.embed_tokens = nn.Embedding(vocab, t["hidden"])
        d = t["head_dim"]
        self.register_buffer("inv_freq", 1.0 / (t["rope_theta"] ** (torch.arange(0, d, 2).float() / d)), persistent=False)
        self.layers = nn.ModuleList([DecoderLayer(t) for _ in range(t["layers"])])
        self.norm = RMSNorm(t["hidden"], t["rms_eps"])
        self.lm_head = nn.Linear(t["hidden"], vocab, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, past=None):
        h, present = self.hidden(inputs_embeds, attention_mask, position_ids, past)
        return self.lm_head(h), present

    def hidden(self, inputs_embeds, attention_mask, position_ids, past=None):
        """The final-norm hidden states (training applies lm_head only at answer positions).
        past: None or a list of (key, value) [B, kv_heads, past, head_dim] per layer. Query i (absolute
        position past + i) sees key j iff j <= past + i and attention_mask[j] = 1; masked scores get
        -1e9 (finite, so the rows of left-padding queries stay NaN-free)."""
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
        total, s = attention_mask.shape[1], inputs_embeds.shape[1]
        key_pos = torch.arange(total, device=inputs_embeds.device).unsqueeze(0)
        q_pos = torch.arange(total - s, total, device=inputs_embeds.device).unsqueeze(1)
        allowed = (key_pos <= q_pos)[None, None] & (attention_mask[:, None, None, :] != 0)
        bias = torch.where(allowed, torch.zeros((), dtype=inputs_embeds.dtype), torch.full((), -1e9, dtype=inputs_embeds.dtype))
        x, present = inputs_embeds, []
        for i, layer in enumerate(self.layers):
            pk, pv = (past[i] if past is not None else (None, None))
            x, k, v = layer(x, cos, sin, bias, pk, pv)
            present.append((k, v))
        return self.norm(x), present


def merge_features(input_ids, embeds, features, token_id):
    """Feature rows replace the placeholder rows in order (flattened over the batch, as HF's
    masked_scatter does), written with cumsum + Gather + Where so it exports like HF graphs."""
    mask = input_ids == token_id
    idx = (mask.to(torch.int64).reshape(-1).cumsum(0) - 1).clamp(min=0).reshape(input_ids.shape)
    rows = features.reshape(-1, features.shape[-1])[idx]
    return torch.where(mask.unsqueeze(-1), rows, embeds)


class ShapesVLM(nn.Module):
    def __init__(self, cfg, vocab, image_token_id, audio_token_id):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        self.image_token_id, self.audio_token_id = image_token_id, audio_token_id
        h = cfg["text"]["hidden"]
        self.vision_tower = VisionTower(cfg["vision"])
        self.multi_modal_projector = VisionProjector(cfg["vision"]["hidden"], h)
        self.audio_tower = AudioTower(cfg["audio"])
        self.audio_projector = AudioProjector(cfg["audio"]["hidden"], h)
        self.language_model = LanguageModel(cfg["text"], vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        # convolutions keep PyTorch's fan-in init: std 0.02 starves the stem's signal
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def image_features(self, pixel_values):
        return self.multi_modal_projector(self.vision_tower(pixel_values))

    def audio_features(self, input_features):
        return self.audio_projector(self.audio_tower(input_features))

    def embed(self, input_ids, pixel_values=None, input_features=None):
        e = self.language_model.embed_tokens(input_ids)
        if pixel_values is not None:
            e = merge_features(input_ids, e, self.image_features(pixel_values), self.image_token_id)
        if input_features is not None:
            e = merge_features(input_ids, e, self.audio_features(input_features), self.audio_token_id)
        return e


def count_params(module):
    return sum(p.numel() for p in module.parameters())
