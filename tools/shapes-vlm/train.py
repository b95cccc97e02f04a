#!/usr/bin/env python3
"""Train the tiny shapes model on CPU (Debian's PyTorch), from scratch, with a fixed seed.

Usage: /usr/bin/python3 tools/shapes-vlm/train.py [--work DIR] [--threads 2]   (the shipped recipe)

Two stages. 1: the vision and audio towers alone learn, through linear probes, to see each grid cell's
shape and colour and to hear which question was asked (600 steps). 2: the towers frozen, the
projectors and the decoder learn to answer (3000 steps), helped by a grounding loss that makes each
image row name its cell's colour, shape and place through the decoder's own lm_head (see Alignment).
Every step draws fresh scenes (infinite data), each a conversation of 1-5 turns about its scene,
rendered exactly as `nanomind chat` renders its history (image in the first user turn, earlier answers
verbatim; tokenizer.render_conversation); the loss covers the answer of every turn. In half of the
batch the first question is spoken and the follow-ups typed. Spoken questions come from a pool of espeak-ng clips
(every question sentence read by many random voices), cached in the work dir. Writes WORK/model.pt and
prints greedy exact-match accuracy on a held-out set (other seeds for scenes and voices) per question
type and modality, and per turn on 40 held-out 5-turn conversations answered with the model's own
earlier answers in the history. The other flags are for experiments.
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
from tokenizer import PROMPT_ORDER, build_tokenizer, conversation_ids, expand, render_prompt  # noqa: E402

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

    def __init__(self, work, order=None, clips_per_sentence=CLIPS_PER_SENTENCE):
        self.tok = build_tokenizer()
        self.order = order
        self.clips_per_sentence = clips_per_sentence
        self._prompts = {}
        self.n_img, self.n_aud = image_tokens(CONFIG), audio_tokens(CONFIG)
        self.fe = features_extractor()
        self.work = work

    def prompt_ids(self, question, spoken):
        key = (question, spoken)
        if key not in self._prompts:
            self._prompts[key] = expand(self.tok.encode(render_prompt(question, spoken, self.order)), self.tok, self.n_img, self.n_aud)
        return self._prompts[key]

    def conversation_ids(self, questions, answers, spoken_first=False):
        """(ids, labels) of a conversation as chat renders it (see tokenizer.conversation_ids)."""
        return conversation_ids(self.tok, questions, answers, self.n_img, self.n_aud, spoken_first, self.order)

    def answer_ids(self, answer):
        return self.tok.encode(answer) + [self.tok.eos_id]

    def clip_features(self):
        path = os.path.join(self.work, f"clips-{CLIP_SEED}-{self.clips_per_sentence}.npz")
        if not os.path.exists(path):
            t = time.time()
            pool, _ = data.clip_pool(CLIP_SEED, self.clips_per_sentence)
            sentences = list(pool)
            feats = np.stack([self.fe(y.astype(np.float32) / 32768.0) for s in sentences for y in pool[s]])
            os.makedirs(self.work, exist_ok=True)
            np.savez(path, feats=feats, sentences=np.array(sentences))
            print(f"clip pool: {len(feats)} clips synthesized in {time.time() - t:.0f} s", flush=True)
        z = np.load(path)
        sentences = [str(s) for s in z["sentences"]]
        feats = torch.from_numpy(z["feats"]).float()
        k = self.clips_per_sentence
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
        logits = self.sentence(hidden.mean(1))
        with torch.no_grad():
            self.probe_audio = (logits.argmax(-1) == targets).float().mean().item()
        return F.cross_entropy(logits, targets)


def cell_targets(scene):
    t = np.zeros((len(data.CELLS), 2), np.int64)
    for o in scene["objects"]:
        t[o["cell"]] = (1 + data.SHAPES.index(o["shape"]), 1 + data.COLOUR_NAMES.index(o["colour"]))
    return t


SENTENCES = data.all_questions()


def make_model(task):
    torch.manual_seed(SEED)
    return ShapesVLM(CONFIG, task.tok.vocab_size, task.tok.image_id, task.tok.audio_id)


def train_batch(task, clips, rng, batch, spoken_frac, max_turns=data.MAX_TURNS):
    """Fresh scenes, each a conversation about it rendered as chat renders it; the first question of
    the first `spoken_frac` of the batch is spoken, the follow-ups typed. Right-padded ids; labels on
    every turn's answer and its <|im_end|>. The number of turns (1..max_turns, uniform) is drawn once
    per batch, so its conversations have about the same length and little compute goes to padding."""
    imgs, ids, labels, feats, cells, sent = [], [], [], [], [], []
    n_spoken = int(round(batch * spoken_frac))
    n_turns = int(rng.integers(1, max_turns + 1))
    for i in range(batch):
        spoken = i < n_spoken
        scene = data.sample_scene(rng)
        turns = data.conversation(scene, rng, n_turns)
        q = turns[0][0]
        x, y = task.conversation_ids([t[0] for t in turns], [t[1] for t in turns], spoken)
        imgs.append(data.render(scene))
        cells.append(cell_targets(scene))
        ids.append(x)
        labels.append(y)
        if spoken:
            pool = clips[q]
            feats.append(pool[int(rng.integers(len(pool)))])
            sent.append(SENTENCES.index(q))
    n = max(len(x) for x in ids)
    pad = task.tok.pad_id
    ids_t = torch.tensor([x + [pad] * (n - len(x)) for x in ids])
    lab_t = torch.tensor([x + [-100] * (n - len(x)) for x in labels])
    words = [task.tok.encode(SENTENCES[k]) for k in sent]
    w = max((len(x) for x in words), default=0)
    aux = {"cells": torch.from_numpy(np.stack(cells)), "sentences": torch.tensor(sent, dtype=torch.int64),
           "words": torch.tensor([x + [-1] * (w - len(x)) for x in words], dtype=torch.int64).reshape(len(words), w)}
    return pixels(np.stack(imgs)), torch.stack(feats) if feats else None, ids_t, lab_t, aux


def encoder_batch(task, clips, rng, batch):
    """Stage 1: fresh scenes with their cell contents, and random clips with their sentence ids."""
    scenes = [data.sample_scene(rng) for _ in range(batch)]
    sent = rng.integers(len(SENTENCES), size=batch)
    feats = torch.stack([clips[SENTENCES[k]][int(rng.integers(len(clips[SENTENCES[k]])))] for k in sent])
    aux = {"cells": torch.from_numpy(np.stack([cell_targets(s) for s in scenes])), "sentences": torch.from_numpy(sent)}
    return pixels(np.stack([data.render(s) for s in scenes])), feats, aux


def encoder_loss(model, heads, px, feats, aux):
    return heads.vision_loss(model.vision_tower(px), aux["cells"]) + heads.audio_loss(model.audio_tower(feats), aux["sentences"])


class Alignment:
    """Stage 2's grounding loss (in the spirit of LLaVA's feature-alignment stage): read through the
    decoder's own final norm and lm_head, each occupied cell's image row must name its colour, its
    shape (each word as an answer and as it appears mid-sentence) and its place in the grid, and the
    mean audio row must name the words of the question spoken. The decoder then finds these words'
    directions in the rows it attends to instead of discovering them from the answer loss alone
    (measured on a GPU sweep with --towers: 82 % vs 56 % typed exact match after 1500 decoder steps)."""

    def __init__(self, tok):
        enc = lambda w: tok.encode(w)[0]
        self.shape_ids = torch.tensor([[enc(x), enc(" " + x)] for x in data.SHAPES])
        self.colour_ids = torch.tensor([[enc(x), enc(" " + x)] for x in data.COLOUR_NAMES])
        cells = [tok.encode(c) for c in data.CELLS]
        self.cell_ids = torch.tensor([c + [-1] * (2 - len(c)) for c in cells])

    def to(self, device):
        self.shape_ids, self.colour_ids, self.cell_ids = (x.to(device) for x in (self.shape_ids, self.colour_ids, self.cell_ids))
        return self

    @staticmethod
    def _nll(logits, targets):
        """Mean negative log-probability of every target id (-1 = none) under each row's softmax."""
        lp = F.log_softmax(logits, -1)
        valid = targets >= 0
        return -(lp.gather(1, targets.clamp(min=0)) * valid).sum() / valid.sum()

    def loss(self, lm, image_rows, cells, audio_rows=None, words=None):
        occ = cells[..., 0] > 0
        where = torch.arange(cells.shape[1], device=cells.device).expand(cells.shape[:2])[occ]
        targets = torch.cat([self.shape_ids[cells[..., 0][occ] - 1], self.colour_ids[cells[..., 1][occ] - 1], self.cell_ids[where]], dim=1)
        loss = self._nll(lm.lm_head(lm.norm(image_rows[occ])), targets)
        if audio_rows is not None and words.numel():
            loss = loss + self._nll(lm.lm_head(lm.norm(audio_rows.mean(1))), words)
        return loss


def loss_fn(model, heads, px, feats, ids, labels, aux, aux_weight=AUX_WEIGHT, towers=True, align=None, align_weight=0.0):
    """LM loss on the answer tokens + (when the towers train) the encoders' probe losses; returns
    (total, lm loss). towers=False: the towers are frozen and run without gradients."""
    lm = model.language_model
    with torch.set_grad_enabled(towers and torch.is_grad_enabled()):
        vh = model.vision_tower(px)
        ah = model.audio_tower(feats) if feats is not None else None
    image_rows = model.multi_modal_projector(vh)
    audio_rows = model.audio_projector(ah) if feats is not None else None
    e = merge_features(ids, lm.embed_tokens(ids), image_rows, model.image_token_id)
    loss = heads.vision_loss(vh, aux["cells"]) if towers else 0.0
    if feats is not None:
        e = merge_features(ids, e, audio_rows, model.audio_token_id)
        if towers:
            loss = loss + heads.audio_loss(ah, aux["sentences"])
    grounding = align.loss(lm, image_rows, aux["cells"], audio_rows, aux["words"]) if align_weight else 0.0
    mask = torch.ones_like(ids)
    h, _ = lm.hidden(e, mask, position_ids_from_mask(mask))
    target = labels[:, 1:]
    sel = target != -100
    lm_loss = F.cross_entropy(lm.lm_head(h[:, :-1][sel]), target[sel])
    return lm_loss + aux_weight * loss + align_weight * grounding, lm_loss


@torch.no_grad()
def greedy(model, task, prompts, px, feats, max_new=MAX_NEW_TOKENS, raw=False):
    """Batched greedy decoding with left padding and the KV cache, as the exported decoder runs:
    prefill the whole prompt, then one token per step with attention_mask growing by one and
    position_ids = (number of real tokens) - 1. Returns the decoded answers (before <|im_end|>),
    stripped, or (raw) verbatim as chat keeps them in the history."""
    lm, tok = model.language_model, task.tok
    dev = next(model.parameters()).device
    b, n = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, n), tok.pad_id, dtype=torch.int64)
    mask = torch.zeros((b, n), dtype=torch.int64)
    for i, p in enumerate(prompts):
        ids[i, n - len(p):] = torch.tensor(p)
        mask[i, n - len(p):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    px, feats = px.to(dev), (feats.to(dev) if feats is not None else None)
    logits, past = lm(model.embed(ids, px, feats), mask, position_ids_from_mask(mask))
    nxt = logits[:, -1].argmax(-1)
    out = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    for _ in range(max_new):
        nxt_l, done_l = nxt.tolist(), done.tolist()
        for i in range(b):
            if not done_l[i] and nxt_l[i] != tok.eos_id:
                out[i].append(nxt_l[i])
        done |= nxt == tok.eos_id
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.int64, device=dev)], dim=1)
        pos = mask.sum(-1, keepdim=True) - 1
        logits, past = lm(lm.embed_tokens(nxt[:, None]), mask, pos, past)
        nxt = logits[:, -1].argmax(-1)
    return [tok.decode(o).strip() for o in out] if not raw else [tok.decode(o) for o in out]


def evaluate_conversations(model, task, convs, batch=50, prompts_out=None):
    """convs: dicts with image (uint8) and turns [(question, answer, type)]. Each turn is asked with the
    model's own earlier answers in the history, verbatim, as `nanomind chat` keeps them (greedy, batched
    per turn). Returns per conversation the list of answers (stripped); `prompts_out` (a list) gets per
    conversation the ids fed on each turn."""
    model.eval()
    answers = []
    for s in range(0, len(convs), batch):
        chunk = convs[s:s + batch]
        px = pixels(np.stack([c["image"] for c in chunk]))
        raw = [[] for _ in chunk]
        fed = [[] for _ in chunk]
        for k in range(max(len(c["turns"]) for c in chunk)):
            live = [j for j, c in enumerate(chunk) if k < len(c["turns"])]
            prompts = [task.conversation_ids([t[0] for t in chunk[j]["turns"][:k + 1]], raw[j])[0] for j in live]
            if prompts_out is not None:
                for j, p in zip(live, prompts):
                    fed[j].append(p)
            for j, a in zip(live, greedy(model, task, prompts, px[live], None, raw=True)):
                raw[j].append(a)
        answers += [[a.strip() for a in r] for r in raw]
        if prompts_out is not None:
            prompts_out += fed
    model.train()
    return answers


def report_conversations(convs, answers, title):
    turns = max(len(c["turns"]) for c in convs)
    per_turn = []
    for k in range(turns):
        ok = [a[k] == c["turns"][k][1] for c, a in zip(convs, answers) if k < len(c["turns"])]
        per_turn.append({"correct": sum(ok), "total": len(ok), "accuracy": sum(ok) / len(ok)})
    whole = [all(x == t[1] for x, t in zip(a, c["turns"])) for c, a in zip(convs, answers)]
    out = {"per_turn": per_turn, "conversation": {"correct": sum(whole), "total": len(whole), "accuracy": sum(whole) / len(whole)}}
    print(title)
    print("  " + " | ".join(f"turn {k + 1} {100 * t['accuracy']:.1f}%" for k, t in enumerate(per_turn))
          + f" | all {turns} right {100 * out['conversation']['accuracy']:.1f}% ({sum(whole)}/{len(whole)})")
    return out


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


def validation_set(task, n_typed=200, n_spoken=200, cache=None):
    """Held-out scenes and voices (VAL_SEED); `cache` (.npz) stores them so machines without
    espeak-ng (or a second run) can load them."""
    if cache and os.path.exists(cache):
        z = np.load(cache)
        meta = json.loads(str(z["meta"]))
        for i, e in enumerate(meta):
            e["image"] = z["images"][i]
            if e["modality"] == "spoken":
                e["feats"] = z["feats"][e.pop("feat_index")].astype(np.float32)
        return meta
    ex = data.make_examples(VAL_SEED, n_typed, n_spoken)
    for e in ex:
        e["image"] = data.render(e["scene"])
        if e["modality"] == "spoken":
            samples, _ = data.synthesize(e["question"], e["voice"])
            e["feats"] = task.fe(samples.astype(np.float32) / 32768.0)
    if cache:
        spoken = [e for e in ex if e["modality"] == "spoken"]
        meta = [{k: e[k] for k in ("question", "answer", "type", "modality")} for e in ex]
        for i, m in enumerate(x for x in meta if x["modality"] == "spoken"):
            m["feat_index"] = i
        np.savez(cache, images=np.stack([e["image"] for e in ex]), feats=np.stack([e["feats"] for e in spoken]).astype(np.float16),
                 meta=np.array(json.dumps(meta)))
    return ex


def run_stage(name, steps, lr, params, step_fn, t0, log, validate=None, eval_every=0):
    """AdamW (decay on matrices only), linear warm-up over 5 % of the steps, cosine to 5 % of lr,
    gradient clipping at 1."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    ema = None
    for step in range(1, steps + 1):
        loss, lm_loss, note = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        shown = float(lm_loss if lm_loss is not None else loss)
        ema = shown if ema is None else 0.98 * ema + 0.02 * shown
        if step % 50 == 0:
            line = f"{name} step {step} loss {ema:.4f} {note} lr {sched.get_last_lr()[0]:.2e} {time.time() - t0:.0f} s"
            log.append(line)
            print(line, flush=True)
        if validate and eval_every and step % eval_every == 0 and step != steps:
            validate(step)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder-steps", type=int, default=600, help="stage 1 (towers + probes); 0: train everything jointly")
    ap.add_argument("--encoder-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3000, help="stage 2 (projectors + decoder)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--spoken-frac", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--work", default=DEFAULT_WORK)
    # for experiments (the defaults are the shipped model's recipe)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--order", choices=["question-first", "image-first"])
    ap.add_argument("--text", default="{}", help="JSON overrides of CONFIG['text']")
    ap.add_argument("--towers", help="a model.pt whose trained towers to load and freeze (skips stage 1)")
    ap.add_argument("--align", type=float, default=1.0, help="weight of the grounding loss in stage 2")
    ap.add_argument("--qk-init", type=float, help="init std of the decoder's q_proj / k_proj")
    ap.add_argument("--aux-weight", type=float, default=AUX_WEIGHT)
    ap.add_argument("--clips-per-sentence", type=int, default=CLIPS_PER_SENTENCE)
    ap.add_argument("--val-cache")
    ap.add_argument("--val-n", type=int, default=200, help="held-out questions per modality")
    ap.add_argument("--val-conversations", type=int, default=40, help="held-out 5-turn conversations")
    ap.add_argument("--max-turns", type=int, default=data.MAX_TURNS, help="training conversations have 1..this many turns")
    ap.add_argument("--out", help="where model.pt and train-log.json go (default: the work dir)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    CONFIG["text"].update(json.loads(args.text))
    t0 = time.time()
    task = Task(args.work, args.order, args.clips_per_sentence)
    clips = task.clip_features()
    val = validation_set(task, args.val_n, args.val_n, args.val_cache)
    val_conv = [{"image": data.render(c["scene"]), "turns": c["turns"]} for c in data.make_conversations(VAL_SEED, args.val_conversations)]
    print(f"data ready in {time.time() - t0:.0f} s; vocab {task.tok.vocab_size}", flush=True)

    model = make_model(task)
    if args.qk_init:
        for layer in model.language_model.layers:
            torch.nn.init.normal_(layer.self_attn.q_proj.weight, std=args.qk_init)
            torch.nn.init.normal_(layer.self_attn.k_proj.weight, std=args.qk_init)
    if args.towers:
        sd = torch.load(args.towers)["state_dict"]
        model.load_state_dict({k: v for k, v in sd.items() if k.startswith(("vision_tower.", "audio_tower."))}, strict=False)
        args.encoder_steps = 0
    model = model.to(args.device)
    for name in ("vision_tower", "multi_modal_projector", "audio_tower", "audio_projector", "language_model"):
        print(f"  {name}: {count_params(getattr(model, name)):,} params")
    heads = AuxHeads(len(SENTENCES)).to(args.device)
    rng = np.random.default_rng(SEED)
    t1 = time.time()
    tower_params = [p for n, p in model.named_parameters() if n.startswith(("vision_tower.", "audio_tower."))]
    log = []

    def to_device(*xs):
        return [x.to(args.device) if torch.is_tensor(x) else ({k: v.to(args.device) for k, v in x.items()} if isinstance(x, dict) else x) for x in xs]

    # Stage 1: the towers alone learn to see each cell's shape and colour and to hear which question
    # was asked (the probes); cheap, and it spares the decoder from chasing moving features.
    if args.encoder_steps:
        def enc_step(step):
            px, feats, aux = to_device(*encoder_batch(task, clips, rng, args.encoder_batch))
            loss = encoder_loss(model, heads, px, feats, aux)
            return loss, None, f"probe shape/colour/question {heads.probe[0]:.2f}/{heads.probe[1]:.2f}/{heads.probe_audio:.2f}"
        run_stage("encoders", args.encoder_steps, args.lr, tower_params + list(heads.parameters()), enc_step, t1, log)

    # Stage 2: the towers frozen, projectors + decoder learn to answer.
    if args.encoder_steps or args.towers:
        for p in tower_params:
            p.requires_grad_(False)
    towers = not (args.encoder_steps or args.towers)

    align = Alignment(task.tok).to(args.device)

    def lm_step(step):
        px, feats, ids, labels, aux = to_device(*train_batch(task, clips, rng, args.batch, args.spoken_frac, args.max_turns))
        loss, lm_loss = loss_fn(model, heads, px, feats, ids, labels, aux, args.aux_weight, towers, align, args.align)
        return loss, lm_loss, (f"probe shape/colour {heads.probe[0]:.2f}/{heads.probe[1]:.2f}" if towers else "")

    def validate(step):
        report(evaluate(model, task, val), f"validation @ {step}")
        report_conversations(val_conv, evaluate_conversations(model, task, val_conv), f"{len(val_conv)} conversations @ {step}")

    lm_params = [p for p in list(model.parameters()) + list(heads.parameters()) if p.requires_grad]
    run_stage("answers", args.steps, args.lr, lm_params, lm_step, t1, log, validate, args.eval_every)
    train_s = time.time() - t1
    acc = report(evaluate(model, task, val), f"validation (seed {VAL_SEED}) after {args.steps} steps")
    acc["conversations"] = report_conversations(val_conv, evaluate_conversations(model, task, val_conv),
                                                f"{len(val_conv)} {data.MAX_TURNS}-turn conversations (seed {VAL_SEED})")
    out = args.out or args.work
    os.makedirs(out, exist_ok=True)
    torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "config": CONFIG, "merges": task.tok.merges,
                "order": args.order or PROMPT_ORDER}, os.path.join(out, "model.pt"))
    with open(os.path.join(out, "train-log.json"), "w") as f:
        json.dump({"max_turns": args.max_turns, "encoder_steps": args.encoder_steps, "encoder_batch": args.encoder_batch, "align": args.align, "steps": args.steps, "batch": args.batch, "lr": args.lr, "threads": args.threads,
                   "train_seconds": round(train_s), "total_seconds": round(time.time() - t0), "validation": acc,
                   "progress": log}, f, indent=2)
    print(f"trained in {train_s:.0f} s (total {time.time() - t0:.0f} s) -> {os.path.join(out, 'model.pt')}")


if __name__ == "__main__":
    main()
