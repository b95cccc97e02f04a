#!/usr/bin/env python3
"""Train the tiny shapes model on CPU (Debian's PyTorch), from scratch, with a fixed seed.

Usage: /usr/bin/python3 tools/shapes-vlm/train.py [--steps N] [--work DIR] [--threads 2]

Every step draws fresh scenes (infinite data); spoken questions come from a pool of espeak-ng clips
(every question sentence read by many random voices), cached in the work dir. Writes WORK/model.pt and
prints greedy exact-match accuracy on a held-out set (other seeds for scenes and voices) per question
type and modality.
"""

import argparse
import json
import math
import os
import sys
import time

# libgomp's default spin-waiting makes 2 OpenMP threads crawl when anything else runs on the cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from mel import WhisperFeatures  # noqa: E402
from model import CONFIG, ShapesVLM, audio_tokens, count_params, image_tokens, merge_features, position_ids_from_mask  # noqa: E402
from tokenizer import build_tokenizer, expand, render_prompt  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_WORK = os.path.join(REPO, ".work", "shapes-vlm")
SEED = 0
CLIP_SEED, CLIPS_PER_SENTENCE = 1, 64
VAL_SEED = 7
MAX_NEW_TOKENS = 24
AUX_WEIGHT = 0.5


def features_extractor():
    return WhisperFeatures(CONFIG["audio"]["mel_bins"], CONFIG["audio"]["frames"] // 100)


def pixels(imgs):
    """uint8 [B,72,72,3] -> normalized float32 [B,3,72,72]: x / 255, then (x - 0.5) / 0.5."""
    x = torch.from_numpy(np.ascontiguousarray(imgs)).float().permute(0, 3, 1, 2) * (1 / 255)
    return (x - 0.5) / 0.5


class Task:
    """Tokenizer, prompt building and the clip pool shared by training, evaluation and export."""

    def __init__(self, work):
        self.tok = build_tokenizer()
        self.n_img, self.n_aud = image_tokens(CONFIG), audio_tokens(CONFIG)
        self.fe = features_extractor()
        self.work = work

    def prompt_ids(self, question, spoken):
        return expand(self.tok.encode(render_prompt(question, spoken)), self.tok, self.n_img, self.n_aud)

    def answer_ids(self, answer):
        return self.tok.encode(answer) + [self.tok.eos_id]

    def clip_features(self):
        path = os.path.join(self.work, f"clips-{CLIP_SEED}-{CLIPS_PER_SENTENCE}.npz")
        if not os.path.exists(path):
            t = time.time()
            pool, _ = data.clip_pool(CLIP_SEED, CLIPS_PER_SENTENCE)
            sentences = list(pool)
            feats = np.stack([self.fe(y.astype(np.float32) / 32768.0) for s in sentences for y in pool[s]])
            os.makedirs(self.work, exist_ok=True)
            np.savez(path, feats=feats, sentences=np.array(sentences))
            print(f"clip pool: {len(feats)} clips synthesized in {time.time() - t:.0f} s", flush=True)
        z = np.load(path)
        sentences = [str(s) for s in z["sentences"]]
        feats = torch.from_numpy(z["feats"])
        k = CLIPS_PER_SENTENCE
        return {s: feats[i * k:(i + 1) * k] for i, s in enumerate(sentences)}


class AuxHeads(torch.nn.Module):
    """Training-only linear probes that make the encoders informative early: each of the vision
    tower's 9 tokens must give its cell's shape and colour (or empty); the audio tower's mean token
    must give which of the question sentences was spoken. They are not exported."""

    def __init__(self, n_sentences):
        super().__init__()
        v, a = CONFIG["vision"], CONFIG["audio"]
        # one vision token per cell (the tower pools its patches to the 3x3 grid), so one shared probe
        self.cells = torch.nn.Linear(v["hidden"], 1 + len(data.SHAPES) + 1 + len(data.COLOUR_NAMES))
        self.sentence = torch.nn.Linear(a["hidden"], n_sentences)

    def vision_loss(self, hidden, targets):
        logits = self.cells(hidden)
        ns = 1 + len(data.SHAPES)
        with torch.no_grad():
            occupied = targets[..., 0] > 0
            self.probe = ((logits[..., :ns].argmax(-1) == targets[..., 0])[occupied].float().mean().item(),
                          (logits[..., ns:].argmax(-1) == targets[..., 1]).float().mean().item())
        return (F.cross_entropy(logits[..., :ns].reshape(-1, ns), targets[..., 0].reshape(-1))
                + F.cross_entropy(logits[..., ns:].reshape(-1, logits.shape[-1] - ns), targets[..., 1].reshape(-1)))

    def audio_loss(self, hidden, targets):
        return F.cross_entropy(self.sentence(hidden.mean(1)), targets)


def cell_targets(scene):
    t = np.zeros((len(data.CELLS), 2), np.int64)
    for o in scene["objects"]:
        t[o["cell"]] = (1 + data.SHAPES.index(o["shape"]), 1 + data.COLOUR_NAMES.index(o["colour"]))
    return t


SENTENCES = data.all_questions()


def make_model(task):
    torch.manual_seed(SEED)
    return ShapesVLM(CONFIG, task.tok.vocab_size, task.tok.image_id, task.tok.audio_id)


def train_batch(task, clips, rng, batch, spoken_frac):
    """Fresh scenes; right-padded ids; labels only on the answer and <|im_end|>."""
    imgs, ids, labels, feats, cells, sent = [], [], [], [], [], []
    n_spoken = int(round(batch * spoken_frac))
    for i in range(batch):
        spoken = i < n_spoken
        scene = data.sample_scene(rng)
        q, a = data.ask(scene, data.TYPES[int(rng.integers(len(data.TYPES)))], rng)
        p, ans = task.prompt_ids(q, spoken), task.answer_ids(a)
        imgs.append(data.render(scene))
        cells.append(cell_targets(scene))
        ids.append(p + ans)
        labels.append([-100] * len(p) + ans)
        if spoken:
            pool = clips[q]
            feats.append(pool[int(rng.integers(len(pool)))])
            sent.append(SENTENCES.index(q))
    n = max(len(x) for x in ids)
    pad = task.tok.pad_id
    ids_t = torch.tensor([x + [pad] * (n - len(x)) for x in ids])
    lab_t = torch.tensor([x + [-100] * (n - len(x)) for x in labels])
    aux = {"cells": torch.from_numpy(np.stack(cells)), "sentences": torch.tensor(sent)}
    return pixels(np.stack(imgs)), torch.stack(feats) if feats else None, ids_t, lab_t, aux


def loss_fn(model, heads, px, feats, ids, labels, aux):
    """LM loss on the answer tokens + the encoders' probe losses; returns (total, lm loss)."""
    lm = model.language_model
    vh = model.vision_tower(px)
    e = merge_features(ids, lm.embed_tokens(ids), model.multi_modal_projector(vh), model.image_token_id)
    loss = heads.vision_loss(vh, aux["cells"])
    if feats is not None:
        ah = model.audio_tower(feats)
        e = merge_features(ids, e, model.audio_projector(ah), model.audio_token_id)
        loss = loss + heads.audio_loss(ah, aux["sentences"])
    mask = torch.ones_like(ids)
    h, _ = lm.hidden(e, mask, position_ids_from_mask(mask))
    target = labels[:, 1:]
    sel = target != -100
    lm_loss = F.cross_entropy(lm.lm_head(h[:, :-1][sel]), target[sel])
    return lm_loss + AUX_WEIGHT * loss, lm_loss


@torch.no_grad()
def greedy(model, task, prompts, px, feats, max_new=MAX_NEW_TOKENS):
    """Batched greedy decoding with left padding and the KV cache, as the exported decoder runs:
    prefill the whole prompt, then one token per step with attention_mask growing by one and
    position_ids = (number of real tokens) - 1. Returns the decoded answers (before <|im_end|>)."""
    lm, tok = model.language_model, task.tok
    b, n = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, n), tok.pad_id, dtype=torch.int64)
    mask = torch.zeros((b, n), dtype=torch.int64)
    for i, p in enumerate(prompts):
        ids[i, n - len(p):] = torch.tensor(p)
        mask[i, n - len(p):] = 1
    logits, past = lm(model.embed(ids, px, feats), mask, position_ids_from_mask(mask))
    nxt = logits[:, -1].argmax(-1)
    out = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool)
    for _ in range(max_new):
        for i in range(b):
            if not done[i] and nxt[i] != tok.eos_id:
                out[i].append(int(nxt[i]))
        done |= nxt == tok.eos_id
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.int64)], dim=1)
        pos = mask.sum(-1, keepdim=True) - 1
        logits, past = lm(lm.embed_tokens(nxt[:, None]), mask, pos, past)
        nxt = logits[:, -1].argmax(-1)
    return [tok.decode(o).strip() for o in out]


def evaluate(model, task, examples, batch=50):
    """examples: dicts with image (uint8), question, answer, type, modality, feats (spoken)."""
    model.eval()
    preds = []
    for modality in ("typed", "spoken"):
        group = [e for e in examples if e["modality"] == modality]
        for s in range(0, len(group), batch):
            chunk = group[s:s + batch]
            px = pixels(np.stack([e["image"] for e in chunk]))
            feats = torch.stack([torch.as_tensor(e["feats"]) for e in chunk]) if modality == "spoken" else None
            prompts = [task.prompt_ids(e["question"], modality == "spoken") for e in chunk]
            for e, p in zip(chunk, greedy(model, task, prompts, px, feats)):
                preds.append((e, p))
    model.train()
    return preds


def report(preds, title):
    rows = {}
    for e, p in preds:
        for key in ((e["modality"], "all"), (e["modality"], e["type"])):
            ok, n = rows.get(key, (0, 0))
            rows[key] = (ok + (p == e["answer"]), n + 1)
    out = {}
    print(title)
    for modality in ("typed", "spoken"):
        if (modality, "all") not in rows:
            continue
        cells = []
        for t in ["all"] + data.TYPES:
            ok, n = rows.get((modality, t), (0, 0))
            if n:
                out[f"{modality}/{t}"] = {"correct": ok, "total": n, "accuracy": ok / n}
                cells.append(f"{t} {100 * ok / n:.1f}% ({ok}/{n})")
        print(f"  {modality:6s} " + " | ".join(cells))
    return out


def validation_set(task, n_typed=200, n_spoken=200):
    ex = data.make_examples(VAL_SEED, n_typed, n_spoken)
    for e in ex:
        e["image"] = data.render(e["scene"])
        if e["modality"] == "spoken":
            samples, _ = data.synthesize(e["question"], e["voice"])
            e["feats"] = task.fe(samples.astype(np.float32) / 32768.0)
    return ex


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--spoken-frac", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--work", default=DEFAULT_WORK)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    task = Task(args.work)
    clips = task.clip_features()
    val = validation_set(task)
    print(f"data ready in {time.time() - t0:.0f} s; vocab {task.tok.vocab_size}", flush=True)

    model = make_model(task)
    for name in ("vision_tower", "multi_modal_projector", "audio_tower", "audio_projector", "language_model"):
        print(f"  {name}: {count_params(getattr(model, name)):,} params")
    heads = AuxHeads(len(SENTENCES))
    params = list(model.named_parameters()) + list(heads.named_parameters())
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    rng = np.random.default_rng(SEED)
    t1, ema = time.time(), None
    for step in range(1, args.steps + 1):
        px, feats, ids, labels, aux = train_batch(task, clips, rng, args.batch, args.spoken_frac)
        loss, lm_loss = loss_fn(model, heads, px, feats, ids, labels, aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        ema = float(lm_loss) if ema is None else 0.98 * ema + 0.02 * float(lm_loss)
        if step % 50 == 0:
            print(f"step {step} lm loss {ema:.4f} total {float(loss):.3f} probe shape/colour {heads.probe[0]:.2f}/{heads.probe[1]:.2f} lr {sched.get_last_lr()[0]:.2e} {time.time() - t1:.0f} s", flush=True)
        if step % args.eval_every == 0 and step != args.steps:
            report(evaluate(model, task, val), f"validation @ {step}")
    train_s = time.time() - t1
    acc = report(evaluate(model, task, val), f"validation (seed {VAL_SEED}) after {args.steps} steps")
    os.makedirs(args.work, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": CONFIG, "merges": task.tok.merges}, os.path.join(args.work, "model.pt"))
    with open(os.path.join(args.work, "train-log.json"), "w") as f:
        json.dump({"steps": args.steps, "batch": args.batch, "lr": args.lr, "threads": args.threads,
                   "train_seconds": round(train_s), "total_seconds": round(time.time() - t0), "validation": acc}, f, indent=2)
    print(f"trained in {train_s:.0f} s (total {time.time() - t0:.0f} s) -> {os.path.join(args.work, 'model.pt')}")


if __name__ == "__main__":
    main()
