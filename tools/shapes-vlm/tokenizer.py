"""A small byte-level BPE tokenizer for the shapes task, in the Hugging Face `tokenizers` format.

Ids: 0..255 the byte symbols in GPT-2's byte-to-unicode order (as Qwen2's vocab starts), then the merges
learned here (every word of the task becomes one token), then the special tokens. Pre-tokenization is
GPT-2's regex (ByteLevel, use_regex), which this module reimplements for ASCII text only; `encode`
gives the same ids as @huggingface/tokenizers on every string of the task (checked from Node by
test/shapes-vlm/shapes-vlm.test.ts against the ids export.py records).

The chat template is ChatML without a default system message; in a user turn it puts the question (text
or `<audio>`) before the `<image>`, the order the model was trained on. One placeholder per media part;
the processor (and the runtime) expands each to `image_seq_length` / `audio_seq_length` copies of the
placeholder id before the features replace those rows.
"""

import re

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<audio>"]

# GPT-2's pre-tokenizer regex with \p{L} / \p{N} narrowed to ASCII: the task's text is ASCII.
_PRETOK = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")

# ChatML. Within a user turn the text and audio parts come first and the image parts after them,
# whatever order the caller lists them in: the model was trained question-first (see PROMPT_ORDER).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}{{ '<audio>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map, in vocab order (index = token id)."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


_ORDER, _CHARS = bytes_to_unicode()
BYTE_CHAR = {b: c for b, c in zip(_ORDER, _CHARS)}


def pretokenize(text):
    return [''.join(BYTE_CHAR[b] for b in piece.encode('utf-8')) for piece in _PRETOK.findall(text)]


def learn_merges(corpus):
    """BPE merges until every pre-token of `corpus` is one symbol. Pairs are counted once per distinct
    pre-token (not by frequency) and ties break on the pair's text, so the result depends only on the
    set of strings."""
    words = {}
    for text in corpus:
        for p in pretokenize(text):
            words[p] = tuple(p)
    merges = []
    while True:
        counts = {}
        for sym in words.values():
            for a, b in zip(sym, sym[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda k: (-counts[k], k))
        merges.append(best)
        for w, sym in words.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            words[w] = tuple(out)


class Tokenizer:
    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.vocab = {c: i for i, c in enumerate(_CHARS)}
        for a, b in self.merges:
            self.vocab[a + b] = len(self.vocab)
        self.special = {s: len(self.vocab) + i for i, s in enumerate(SPECIALS)}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.id_to_token.update({i: s for s, i in self.special.items()})
        self.vocab_size = len(self.vocab) + len(SPECIALS)
        self._special_re = re.compile('(' + '|'.join(re.escape(s) for s in SPECIALS) + ')')
        self._cache = {}

    @property
    def pad_id(self):
        return self.special["<|endoftext|>"]

    @property
    def eos_id(self):
        return self.special["<|im_end|>"]

    @property
    def image_id(self):
        return self.special["<image>"]

    @property
    def audio_id(self):
        return self.special["<audio>"]

    def _bpe(self, word):
        if word in self._cache:
            return self._cache[word]
        sym = list(word)
        while len(sym) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            sym[i:i + 2] = [sym[i] + sym[i + 1]]
        ids = [self.vocab[s] for s in sym]
        self._cache[word] = ids
        return ids

    def encode(self, text):
        """Special tokens are matched first (as added tokens are), the rest is byte-level BPE."""
        ids = []
        for part in self._special_re.split(text):
            if not part:
                continue
            if part in self.special:
                ids.append(self.special[part])
                continue
            for p in pretokenize(part):
                ids.extend(self._bpe(p))
        return ids

    def decode(self, ids, skip_special=True):
        inv = {c: b for b, c in BYTE_CHAR.items()}
        out, buf = [], []
        for i in ids:
            t = self.id_to_token[i]
            if i in self.special.values():
                if buf:
                    out.append(bytes(buf).decode('utf-8', 'replace'))
                    buf = []
                if not skip_special:
                    out.append(t)
                continue
            buf.extend(inv[c] for c in t)
        if buf:
            out.append(bytes(buf).decode('utf-8', 'replace'))
        return ''.join(out)

    # ---- files --------------------------------------------------------------------------------

    def tokenizer_json(self):
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for s, i in self.special.items()
            ],
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": byte_level,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": self.vocab, "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def tokenizer_config_json(self):
        return {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
                for s, i in self.special.items()
            },
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>", "<audio>"],
            "bos_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "image_token": "<image>",
            "audio_token": "<audio>",
            "model_max_length": 256,  # = the decoder's max_position_embeddings (5-turn chats need ~150)
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        }


# Where the question goes relative to the image inside the user turn. "question-first" puts the typed
# or spoken question before the image rows, so every image row can attend to the question (the decoder
# is causal) and the image rows always end at the same distance from the answer.
PROMPT_ORDER = "question-first"


def render_prompt(question=None, spoken=False, order=None, image=True):
    """The chat template applied to one user turn with the generation prompt; each placeholder appears
    once here and is expanded by `prompt_ids`. image=False: a follow-up turn (text only)."""
    q = "<audio>" if spoken else question
    img = "<image>" if image else ""
    parts = q + img if (order or PROMPT_ORDER) == "question-first" else img + q
    return f"<|im_start|>user\n{parts}<|im_end|>\n<|im_start|>assistant\n"


def render_conversation(questions, answers, spoken_first=False, order=None):
    """The chat template over a conversation about one image, as `nanomind chat` renders its history:
    the image (and, spoken, the audio) in the first user turn only, every earlier answer verbatim and
    closed by <|im_end|>. len(answers) == len(questions) - 1: ends with the generation prompt of the
    last question (what chat sends on that turn); == len(questions): ends with the last answer's
    <|im_end|> (a training example)."""
    text = ""
    for i, q in enumerate(questions):
        if i:
            text += "\n"
        text += render_prompt(q, spoken_first and i == 0, order, image=i == 0)
        if i < len(answers):
            text += answers[i] + "<|im_end|>"
    return text


def conversation_ids(tok, questions, answers, n_img, n_aud, spoken_first=False, order=None):
    """(ids, labels) of `render_conversation`, placeholders expanded; labels hold each answer's ids and
    its <|im_end|> (what the model must generate), -100 elsewhere. Built piece by piece so the labels
    are exact, and checked against the whole text's encoding (the runtime tokenizes the whole text)."""
    ids, labels = [], []
    for i, q in enumerate(questions):
        p = tok.encode(("\n" if i else "") + render_prompt(q, spoken_first and i == 0, order, image=i == 0))
        ids += p
        labels += [-100] * len(p)
        if i < len(answers):
            a = tok.encode(answers[i]) + [tok.eos_id]
            ids += a
            labels += a
    whole = tok.encode(render_conversation(questions, answers, spoken_first, order))
    if ids != whole:
        if len(answers) == len(questions):
            raise ValueError(f"piecewise ids differ from the whole conversation's: {questions} {answers}")
        # a prompt whose history holds an odd answer (early in training): the runtime's encoding
        ids, labels = whole, [-100] * len(whole)
    ex = expand(ids, tok, n_img, n_aud)
    lab = []
    for i, l in zip(ids, labels):
        lab += [l] * (n_img if i == tok.image_id else n_aud if i == tok.audio_id else 1)
    return ex, lab


def expand(ids, tok, image_tokens, audio_tokens):
    out = []
    for i in ids:
        if i == tok.image_id:
            out.extend([i] * image_tokens)
        elif i == tok.audio_id:
            out.extend([i] * audio_tokens)
        else:
            out.append(i)
    return out


def build_tokenizer():
    from data import all_texts  # the task's strings decide the merges
    return Tokenizer(learn_merges(all_texts() + ["user", "assistant", "system", "\n"]))
