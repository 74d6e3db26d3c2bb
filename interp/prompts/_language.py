"""Language data: the small synthetic languages of the zoo models, and their shared tokenizer.

Word lists, names, templates, the filler grammar, the needle sentence and the tokenizer live here
(in ``interp.prompts``) so that prompt generators and the zoo's training recipes
(``interp.models.train``, which import this module) read the same data.

Three languages share one finite vocabulary:

* IOI sentences: the 15 BABA templates of Wang et al. 2022 ("Interpretability in the Wild: a
  Circuit for Indirect Object Identification in GPT-2 small", arXiv:2211.00593) and their ABBA
  versions (the first clause's two names swapped), filled with names, places and objects.
* Filler sentences from a small grammar (many subjects, verbs, objects, adjectives and several
  sentence structures): language-model text and needle-in-a-haystack haystacks.
* The needle "The secret code is X Y Z." and its closing question, whose answer copies the code
  (haystacks are filler text; the training examples are built in ``interp.models.train.needle``,
  prompt sets with ``interp.prompts.needle``).

The tokenizer is word level with GPT-2's conventions: a word with its leading space is one token
(" Mary"), punctuation marks are tokens, and ``<|endoftext|>`` is BOS, EOS and PAD.
Everything here is deterministic: random choices take an explicit ``random.Random``.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS = "<|endoftext|>"
UNK = "<unk>"

# ----------------------------------------------------------------------------------------------
# IOI vocabulary
# ----------------------------------------------------------------------------------------------

NAMES: list[str] = [
    "Mary", "John", "Alice", "Bob", "Tom", "Anna", "Paul", "Kate", "Mark", "Sara",
    "James", "Linda", "Robert", "Susan", "Michael", "Karen", "David", "Lisa", "Daniel", "Nancy",
    "Steven", "Laura", "Kevin", "Emily", "Brian", "Helen", "George", "Amy", "Edward", "Ruth",
    "Jason", "Rachel", "Ryan", "Julia", "Jacob", "Grace", "Gary", "Alex", "Eric", "Emma",
    "Frank", "Olivia", "Peter", "Sophia", "Henry", "Chloe", "Adam", "Lucy", "Nathan", "Ella",
    "Samuel", "Hannah", "Carl", "Megan", "Victor", "Diana", "Oscar", "Irene", "Simon", "Nora",
    "Hugo", "Clara", "Leo", "Fiona", "Ivan", "Vera", "Max", "Rosa", "Felix", "Tina",
]

# The places and objects of Wang et al. 2022.
PLACES: list[str] = [
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
]
OBJECTS: list[str] = [
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack",
]

# The 15 BABA templates of Wang et al. 2022 (their BABA_TEMPLATES), text up to the answer.
# [A] is the indirect object (the answer), [B] the subject (repeated).
BABA_TEMPLATES: list[str] = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
]
# ABBA: the first clause's two names swapped.
ABBA_TEMPLATES: list[str] = [t.replace("[B] and [A]", "[A] and [B]", 1) for t in BABA_TEMPLATES]


def ioi_text(template: str, io: str, s: str, place: str = "store", obj: str = "ring") -> str:
    """The IOI prompt (without the answer, which is ``" " + io``)."""
    return (
        template.replace("[A]", io)
        .replace("[B]", s)
        .replace("[PLACE]", place)
        .replace("[OBJECT]", obj)
    )


def ioi_answer(io: str) -> str:
    return " " + io


def split_name_pairs(
    seed: int = 0, heldout_frac: float = 0.2
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Ordered (io, s) name pairs split into (train, held-out).

    The split is over unordered pairs, so neither order of a held-out pair is seen in training;
    every name still occurs in many training pairs.
    """
    unordered = list(itertools.combinations(NAMES, 2))
    rng = random.Random(seed)
    rng.shuffle(unordered)
    n_held = int(round(len(unordered) * heldout_frac))
    held, train = unordered[:n_held], unordered[n_held:]

    def both(pairs):
        return [p for a, b in pairs for p in ((a, b), (b, a))]

    return both(train), both(held)


def ioi_example(
    rng: random.Random, pairs: list[tuple[str, str]], kind: str | None = None
) -> dict[str, Any]:
    """A random IOI prompt: ``{"prompt", "answer", "io", "s", "template", "kind"}``."""
    io, s = rng.choice(pairs)
    kind = kind or rng.choice(["BABA", "ABBA"])
    templates = BABA_TEMPLATES if kind == "BABA" else ABBA_TEMPLATES
    t = rng.randrange(len(templates))
    prompt = ioi_text(templates[t], io, s, rng.choice(PLACES), rng.choice(OBJECTS))
    return {"prompt": prompt, "answer": ioi_answer(io), "io": io, "s": s, "template": t,
            "kind": kind}


# ----------------------------------------------------------------------------------------------
# Filler grammar
# ----------------------------------------------------------------------------------------------
# It never uses the words of the needle ("secret", "code", "is", "question", "answer") nor the
# names, so a needle and an IOI sentence stand out from any haystack. " is" occurs only in the
# needle and at the very end of the needle question, so the answer is an induction-style copy.

_NOUNS = (
    "cat dog bird horse farmer teacher doctor child girl boy man woman king queen baker sailor "
    "pilot student artist writer singer driver hunter fisher painter soldier nurse judge "
    "river mountain tree flower book letter song car boat train ship city village forest "
    "lake bridge road window door table chair lamp cup plate bread apple orange cake "
    "box bag hat coat shoe key clock picture map stone wall field hill island cloud "
    "storm wind fire candle garden kitchen market library museum castle tower farm"
).split()
_ADJS = (
    "old young big small happy sad quiet loud bright dark warm cold green red blue yellow "
    "tall short quick slow brave kind clever lazy busy tired gentle strange famous heavy "
    "light empty full clean dirty soft hard rich poor calm wild"
).split()
_VERBS_T = (
    "saw found painted visited carried opened closed built watched followed helped liked "
    "cleaned moved lifted pushed pulled bought sold remembered noticed touched fixed drew "
    "washed broke"
).split()
_VERBS_I = (
    "slept laughed waited smiled walked ran danced sang worked jumped rested arrived "
    "stayed cried swam listened"
).split()
_ADVS = "quickly slowly quietly happily carefully suddenly often early late again".split()
_PREPS = "near behind under above beside inside across past".split()
_TIMES = [
    "In the morning", "At night", "Yesterday", "Last week", "Every day", "Later", "Once",
    "Soon", "Today", "In the evening", "Before dawn", "After dinner",
]
_FEEL = "thought knew believed felt hoped guessed".split()


def _np(rng: random.Random, det: str | None = None) -> str:
    det = det or rng.choice(["the", "the", "a", "my", "our", "that", "this", "every"])
    if rng.random() < 0.45:
        return f"{det} {rng.choice(_ADJS)} {rng.choice(_NOUNS)}"
    return f"{det} {rng.choice(_NOUNS)}"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def filler_sentence(rng: random.Random) -> str:
    """One sentence of the filler grammar, e.g. "The old farmer painted a red door."."""
    k = rng.randrange(10)
    if k == 0:
        s = f"{_np(rng)} {rng.choice(_VERBS_T)} {_np(rng)}"
    elif k == 1:
        s = f"{_np(rng)} {rng.choice(_VERBS_I)} {rng.choice(_ADVS)}"
    elif k == 2:
        s = f"{_np(rng)} {rng.choice(_VERBS_I)} {rng.choice(_PREPS)} {_np(rng)}"
    elif k == 3:
        s = f"{_np(rng)} was {rng.choice(['very', 'so', 'quite', 'not'])} {rng.choice(_ADJS)}"
    elif k == 4:
        s = f"{rng.choice(_TIMES)}, {_np(rng)} {rng.choice(_VERBS_T)} {_np(rng)}"
    elif k == 5:
        s = f"{_np(rng)} and {_np(rng)} {rng.choice(_VERBS_I)} together"
    elif k == 6:
        s = (f"{_np(rng)} {rng.choice(_VERBS_T)} {_np(rng)} {rng.choice(_PREPS)} "
             f"{_np(rng)}")
    elif k == 7:
        s = (f"{_np(rng)} {rng.choice(_FEEL)} that {_np(rng)} was "
             f"{rng.choice(_ADJS)}")
    elif k == 8:
        s = (f"{_np(rng)} {rng.choice(_VERBS_I)}, but {_np(rng)} "
             f"{rng.choice(_VERBS_I)} {rng.choice(_ADVS)}")
    else:
        s = (f"when {_np(rng)} {rng.choice(_VERBS_I)}, {_np(rng)} "
             f"{rng.choice(_VERBS_T)} {_np(rng)}")
    return _cap(s) + "."


# ----------------------------------------------------------------------------------------------
# Needle in a haystack
# ----------------------------------------------------------------------------------------------

#: The words a secret code is made of; they occur nowhere else in the languages.
NEEDLE_VALUES: list[str] = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
    "ruby amber jade onyx pearl coral ivory topaz opal garnet cobalt crimson violet indigo "
    "silver copper bronze iron nickel zinc cedar maple willow birch aspen falcon eagle raven "
    "otter badger lynx panda tiger zebra mango lemon cherry peach plum grape melon kiwi "
    "comet meteor nebula quasar pulsar photon proton neutron"
).split()
NEEDLE_PREFIX = "The secret code is"
NEEDLE_QUESTION = "Question: what was the secret code? Answer: the secret code is"


def needle_sentence(values: list[str]) -> str:
    return f"{NEEDLE_PREFIX} {' '.join(values)}."


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

PUNCTUATION = list(".,:?!'")


def _words_of(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def vocabulary_words() -> list[str]:
    """Every word of the three languages (each gets four tokens: w, " w", W, " W")."""
    words: list[str] = []
    words += NAMES + PLACES + OBJECTS + NEEDLE_VALUES
    for t in BABA_TEMPLATES:
        words += _words_of(t.replace("[A]", "").replace("[B]", "").replace("[PLACE]", "")
                           .replace("[OBJECT]", ""))
    words += _NOUNS + _ADJS + _VERBS_T + _VERBS_I + _ADVS + _PREPS + _FEEL
    for t in _TIMES:
        words += _words_of(t)
    words += ("the a and to of was very so quite not together that but when my our this "
              "every").split()
    words += _words_of(NEEDLE_PREFIX) + _words_of(NEEDLE_QUESTION)
    return list(dict.fromkeys(words))


@functools.lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    from tokenizers import pre_tokenizers

    byte = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pieces: list[str] = []
    for w in vocabulary_words():
        for form in (w, w[0].upper() + w[1:], w.lower()):
            for text in (form, " " + form):
                pieces += [p for p, _ in byte.pre_tokenize_str(text)]
    for p in PUNCTUATION:
        for text in (p, " " + p):
            pieces += [x for x, _ in byte.pre_tokenize_str(text)]
    vocab = {BOS: 0, UNK: 1}
    for piece in sorted(set(pieces)):
        vocab.setdefault(piece, len(vocab))
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The shared word-level tokenizer (deterministic; ~1.5k tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab=dict(_vocab()), unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=BOS,
        eos_token=BOS,
        pad_token=BOS,
        unk_token=UNK,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    return fast


def save_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    tok = build_tokenizer()
    tok.save_pretrained(str(directory))
    return tok


def ordinary_token_ids() -> list[int]:
    """Token ids other than the special tokens (used for random-token sequences)."""
    v = _vocab()
    return [i for t, i in v.items() if t not in (BOS, UNK)]
