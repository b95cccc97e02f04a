"""The shapes task: deterministic scenes, questions with short exact answers, and spoken questions.

Scenes are 72x72 RGB images of 1-3 shapes (distinct kinds and colours, each in its own 24x24 cell of
a 3x3 grid, random size and jitter) on a light background, rendered with 4x4 supersampling and stored as PNG
at model size, so the pixels the runtime decodes are the pixels the model was trained on.

Spoken questions are the same sentences read by espeak-ng (voices, variants, speed, pitch, amplitude
drawn at random), resampled from 22050 Hz to 16 kHz with a Kaiser-windowed sinc in numpy, and stored as
16-bit mono WAV; features are computed from the 16-bit samples (int16 / 32768), as a reader of the WAV
gets them.

Conversations (1-5 turns about one scene, the image in the first user turn) are drawn by `conversation`;
the held-out conversation set is written by `write_conversations`.

Usage: python3 tools/shapes-vlm/data.py eval OUT_DIR   (the held-out set; export.py calls this too)
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
import zlib

import numpy as np

IMAGE_SIZE = 72
SHAPES = ["circle", "square", "triangle", "diamond"]
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
    "purple": (135, 55, 185),
}
COLOUR_NAMES = list(COLOURS)
# 3x3 grid cells in reading order
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
TYPES = ["color", "shape", "count", "position", "describe"]

TEMPLATES = {
    "color": ["what colour is the {shape}?", "what color is the {shape}?", "which colour is the {shape}?"],
    "shape": ["what shape is {colour}?", "which shape is {colour}?", "what is the {colour} shape?"],
    "count": ["how many shapes are there?", "how many shapes do you see?", "count the shapes."],
    "position": ["where is the {shape}?", "where is the {colour} shape?"],
    "describe": ["describe the image.", "what do you see?", "describe the picture."],
}

# shape half-extent relative to its size r, so every shape stays inside its cell
EXTENT = {"circle": 1.0, "square": 0.85, "triangle": 1.0, "diamond": 1.1}
CELL = IMAGE_SIZE / 3

# ---------------------------------------------------------------------------------------------------
# Scenes and images
# ---------------------------------------------------------------------------------------------------


def sample_scene(rng):
    n = int(rng.integers(1, 4))
    shapes = rng.choice(len(SHAPES), n, replace=False)
    colours = rng.choice(len(COLOUR_NAMES), n, replace=False)
    cells = rng.choice(len(CELLS), n, replace=False)
    grey = int(rng.integers(215, 250))
    bg = [int(np.clip(grey + rng.integers(-8, 9), 0, 255)) for _ in range(3)]
    objs = []
    for s, c, cell in zip(shapes, colours, cells):
        shape = SHAPES[s]
        r = float(rng.uniform(6.0, 9.5))
        room = CELL / 2 - r * EXTENT[shape] - 0.5
        cx = (cell % 3 + 0.5) * CELL + float(rng.uniform(-room, room))
        cy = (cell // 3 + 0.5) * CELL + float(rng.uniform(-room, room))
        rgb = [int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[COLOUR_NAMES[c]]]
        objs.append({"shape": shape, "colour": COLOUR_NAMES[c], "cell": int(cell), "cx": cx, "cy": cy, "r": r, "rgb": rgb})
    objs.sort(key=lambda o: o["cell"])
    return {"background": bg, "objects": objs}


_SS = 4


def _inside(o, xx, yy):
    dx, dy, r = xx - o["cx"], yy - o["cy"], o["r"]
    s = o["shape"]
    if s == "circle":
        return dx * dx + dy * dy <= r * r
    if s == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= EXTENT["square"] * r
    if s == "diamond":
        return np.abs(dx) + np.abs(dy) <= EXTENT["diamond"] * r
    # triangle pointing up: apex at cy - r, base at cy + 0.8 r, half-base r
    t = (dy + r) / (1.8 * r)
    return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)


def render(scene):
    """uint8 [72, 72, 3]. Coverage is sampled on a 4x4 grid per pixel, only over the pixels of the
    shape's bounding box (every pixel outside it has coverage 0)."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float64)
    img[:] = scene["background"]
    for o in scene["objects"]:
        reach = o["r"] * max(EXTENT.values()) + 1
        x0, x1 = max(0, int(o["cx"] - reach)), min(IMAGE_SIZE, int(o["cx"] + reach) + 1)
        y0, y1 = max(0, int(o["cy"] - reach)), min(IMAGE_SIZE, int(o["cy"] + reach) + 1)
        yy, xx = np.meshgrid((np.arange(y0 * _SS, y1 * _SS) + 0.5) / _SS, (np.arange(x0 * _SS, x1 * _SS) + 0.5) / _SS, indexing="ij")
        a = _inside(o, xx, yy).reshape(y1 - y0, _SS, x1 - x0, _SS).mean(axis=(1, 3))[..., None]
        box = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = box * (1 - a) + np.asarray(o["rgb"], np.float64) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_png(path, img):
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


# ---------------------------------------------------------------------------------------------------
# Questions and answers
# ---------------------------------------------------------------------------------------------------


def describe(scene):
    parts = [f"a {o['colour']} {o['shape']}" for o in scene["objects"]]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def ask(scene, qtype, rng):
    """(question, answer) of the given type about the scene."""
    t = TEMPLATES[qtype][int(rng.integers(len(TEMPLATES[qtype])))]
    o = scene["objects"][int(rng.integers(len(scene["objects"])))]
    q = t.format(shape=o["shape"], colour=o["colour"])
    if qtype == "color":
        return q, o["colour"]
    if qtype == "shape":
        return q, o["shape"]
    if qtype == "count":
        return q, str(len(scene["objects"]))
    if qtype == "position":
        return q, CELLS[o["cell"]]
    return q, describe(scene)


MAX_TURNS = 5


def conversation(scene, rng, turns):
    """`turns` (question, answer, type) about one scene, each turn's type drawn afresh: a chat where
    the image comes with the first question and the follow-ups ask about the same image."""
    out = []
    for _ in range(turns):
        qtype = TYPES[int(rng.integers(len(TYPES)))]
        out.append((*ask(scene, qtype, rng), qtype))
    return out


def all_questions():
    out = []
    for qtype in TYPES:
        for t in TEMPLATES[qtype]:
            if "{shape}" in t:
                out += [t.format(shape=s) for s in SHAPES]
            elif "{colour}" in t:
                out += [t.format(colour=c) for c in COLOUR_NAMES]
            else:
                out.append(t)
    return out


def all_texts():
    """Every question and every answer word the task can produce (the tokenizer's training set)."""
    answers = COLOUR_NAMES + SHAPES + ["1", "2", "3"] + CELLS
    phrases = [f"a {c} {s}" for c in COLOUR_NAMES for s in SHAPES]
    describes = [phrases[0] + ", " + phrases[1] + " and " + p for p in phrases]
    return all_questions() + answers + phrases + describes


# ---------------------------------------------------------------------------------------------------
# Speech
# ---------------------------------------------------------------------------------------------------

LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3"]
MAX_SECONDS = 2.9


def sample_voice(rng):
    return {
        "voice": f"{LANGS[int(rng.integers(len(LANGS)))]}+{VARIANTS[int(rng.integers(len(VARIANTS)))]}",
        "speed": int(rng.integers(130, 211)),
        "pitch": int(rng.integers(25, 76)),
        "amplitude": int(rng.integers(70, 151)),
        "lead": float(rng.uniform(0.0, 0.25)),
    }


def _espeak(text, v):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.wav")
        subprocess.run(["espeak-ng", "-v", v["voice"], "-s", str(v["speed"]), "-p", str(v["pitch"]),
                        "-a", str(v["amplitude"]), "-w", path, text], check=True, capture_output=True)
        with wave.open(path) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
    return x, rate


_PHASES = {}


def resample(x, src, dst=16000, half=32, beta=8.6):
    """Kaiser-windowed sinc interpolation (cutoff at 92 % of the target Nyquist). The output times fall
    on dst / gcd distinct input phases, so the taps are computed once per phase."""
    g = np.gcd(src, dst)
    up, down = dst // g, src // g
    key = (src, dst, half, beta)
    if key not in _PHASES:
        frac = np.arange(up)[:, None] * down % up / up  # fractional input position of each phase
        dist = frac + half - 1 - np.arange(2 * half)[None, :]  # distance to taps floor(t) - half + 1 ...
        fc = 0.5 * dst / src * 0.92
        w = 2 * fc * np.sinc(2 * fc * dist) * np.i0(beta * np.sqrt(np.clip(1 - (dist / half) ** 2, 0, 1))) / np.i0(beta)
        _PHASES[key] = w / w.sum(axis=1, keepdims=True)
    taps = _PHASES[key]
    n = np.arange(len(x) * dst // src)
    k = (n * down // up)[:, None] + np.arange(-half + 1, half + 1)[None, :]
    xp = np.concatenate([np.zeros(half), x, np.zeros(2 * half)])
    return (xp[k + half] * taps[n % up]).sum(axis=1)


def synthesize(text, v):
    """int16 samples at 16 kHz: leading silence + the trimmed utterance + 60 ms."""
    v = dict(v)
    while True:
        x, rate = _espeak(text, v)
        loud = np.nonzero(np.abs(x) > 0.02 * np.abs(x).max())[0]
        x = x[max(0, loud[0] - int(0.02 * rate)):loud[-1] + int(0.02 * rate)]
        y = resample(x, rate)
        y = np.concatenate([np.zeros(int(v["lead"] * 16000)), y, np.zeros(960)])
        if len(y) <= MAX_SECONDS * 16000:
            break
        v["speed"] += 20  # too slow to fit the chunk: read it faster
    return np.clip(np.rint(y * 32768.0), -32768, 32767).astype(np.int16), v


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav(path):
    with wave.open(path) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def clip_pool(seed, per_sentence, workers=2):
    """Spoken versions of every question: {sentence: [int16 arrays]} plus the voice settings used."""
    sentences = all_questions()
    rng = np.random.default_rng(seed)
    jobs = [(s, sample_voice(rng)) for s in sentences for _ in range(per_sentence)]
    from multiprocessing import Pool
    with Pool(workers) as p:
        out = p.starmap(synthesize, jobs)
    pool, voices = {s: [] for s in sentences}, {s: [] for s in sentences}
    for (s, _), (y, v) in zip(jobs, out):
        pool[s].append(y)
        voices[s].append(v)
    return pool, voices


# ---------------------------------------------------------------------------------------------------
# Held-out set
# ---------------------------------------------------------------------------------------------------


def make_examples(seed, n_typed, n_spoken):
    """Balanced over question types; spoken examples carry their voice settings."""
    rng = np.random.default_rng(seed)
    ex = []
    for modality, n in (("typed", n_typed), ("spoken", n_spoken)):
        for i in range(n):
            qtype = TYPES[i % len(TYPES)]
            scene = sample_scene(rng)
            q, a = ask(scene, qtype, rng)
            e = {"scene": scene, "question": q, "answer": a, "type": qtype, "modality": modality}
            if modality == "spoken":
                e["voice"] = sample_voice(rng)
            ex.append(e)
    return ex


def write_eval(out_dir, seed=20250101, n_typed=200, n_spoken=100):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(os.path.join(out_dir, "images"))
    os.makedirs(os.path.join(out_dir, "audio"))
    rows = []
    for i, e in enumerate(make_examples(seed, n_typed, n_spoken)):
        rid = f"{e['modality']}-{i:04d}"
        img = f"images/{rid}.png"
        write_png(os.path.join(out_dir, img), render(e["scene"]))
        row = {"id": rid, "image": img, "question": e["question"], "answer": e["answer"], "type": e["type"], "modality": e["modality"]}
        if e["modality"] == "spoken":
            samples, v = synthesize(e["question"], e["voice"])
            row["audio"] = f"audio/{rid}.wav"
            row["voice"] = v
            write_wav(os.path.join(out_dir, row["audio"]), samples)
        rows.append(row)
    with open(os.path.join(out_dir, "eval.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def make_conversations(seed, n, turns=MAX_TURNS):
    """n typed conversations of `turns` turns, each about its own unseen scene; every turn's type is
    drawn at random, so a conversation mixes colour, shape, count, position and describe questions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = sample_scene(rng)
        out.append({"scene": scene, "turns": conversation(scene, rng, turns)})
    return out


def write_conversations(out_dir, seed, n=40, turns=MAX_TURNS):
    """OUT_DIR/conversations.jsonl + OUT_DIR/images/conv-*.png: one line per conversation,
    {"id", "image", "turns": [{"question", "answer", "type"}]} (paths relative to OUT_DIR)."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    rows = []
    for i, c in enumerate(make_conversations(seed, n, turns)):
        rid = f"conv-{i:04d}"
        img = f"images/{rid}.png"
        write_png(os.path.join(out_dir, img), render(c["scene"]))
        rows.append({"id": rid, "image": img, "turns": [{"question": q, "answer": a, "type": t} for q, a, t in c["turns"]]})
    with open(os.path.join(out_dir, "conversations.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "eval":
        sys.exit(__doc__)
    rows = write_eval(sys.argv[2])
    print(f"{len(rows)} examples -> {sys.argv[2]}")
