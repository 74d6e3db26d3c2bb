"""Prompt-set generators: IOI, repeated random tokens (induction), needle in a haystack."""

from __future__ import annotations

import random
from typing import Literal, Sequence

import torch

from interp.prompts._promptset import (
    PromptError,
    PromptSet,
    _pad_id,
    _tok_meta,
    encode,
    get_tokenizer,
    model_n_ctx,
)


def _languages():
    from interp.models.train import languages

    return languages


def single_token_words(tokenizer, words: Sequence[str]) -> list[str]:
    """The words that are exactly one token with a leading space under ``tokenizer``."""
    return [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]


def ioi(
    model,
    n: int = 32,
    *,
    templates: Literal["mixed", "BABA", "ABBA"] = "mixed",
    corruption: Literal["abc", "swap"] = "abc",
    seed: int = 0,
    names: Sequence[str] | None = None,
    name_pairs: Sequence[tuple[str, str]] | None = None,
    template_ids: Sequence[int] | None = None,
    prepend_bos: bool = True,
) -> PromptSet:
    """Indirect-object-identification prompts (Wang et al. 2022 templates).

    Answer = the indirect object (IO), wrong answer = the subject (S), read at the last token
    ("to"). ``corruption="abc"`` replaces IO, S1 and S2 by three other names (the p_ABC
    distribution); ``"swap"`` swaps IO and S everywhere. ``name_pairs`` restricts (IO, S) pairs
    (e.g. the zoo's held-out pairs). Names that are not single tokens under the model's tokenizer
    are dropped; too few left is an error.
    """
    L = _languages()
    tok = get_tokenizer(model)
    rng = random.Random(seed)
    pool = single_token_words(tok, names if names is not None else L.NAMES)
    if len(pool) < 5:
        raise PromptError(
            f"only {len(pool)} of the names are single tokens for this tokenizer; IOI needs at "
            "least 5. Pass names=[...] that are single tokens with a leading space."
        )
    places = single_token_words(tok, L.PLACES) or list(L.PLACES)
    objects = single_token_words(tok, L.OBJECTS) or list(L.OBJECTS)
    if templates == "mixed":
        fam = [("BABA", t) for t in L.BABA_TEMPLATES] + [("ABBA", t) for t in L.ABBA_TEMPLATES]
    elif templates == "BABA":
        fam = [("BABA", t) for t in L.BABA_TEMPLATES]
    elif templates == "ABBA":
        fam = [("ABBA", t) for t in L.ABBA_TEMPLATES]
    else:
        raise PromptError(f"templates must be 'mixed', 'BABA' or 'ABBA', not {templates!r}.")
    if template_ids is not None:
        fam = [fam[i] for i in template_ids]
    pairs = [p for p in (name_pairs or []) if p[0] in pool and p[1] in pool]
    if name_pairs is not None and not pairs:
        raise PromptError("none of the given name pairs are single-token names for this tokenizer.")

    clean, corrupt, ans, wrong, ctext, ktext, kinds, pos_io, pos_s1, pos_s2 = ([] for _ in range(10))
    for i in range(n):
        kind, tmpl = fam[i % len(fam)] if templates != "mixed" else fam[rng.randrange(len(fam))]
        io, s = rng.choice(pairs) if pairs else rng.sample(pool, 2)
        place, obj = rng.choice(places), rng.choice(objects)
        text = L.ioi_text(tmpl, io, s, place, obj)
        if corruption == "abc":
            a, b, c = rng.sample([x for x in pool if x not in (io, s)], 3)
            ctext_i = _fill_abc(tmpl, a, b, c, place, obj)
        elif corruption == "swap":
            ctext_i = L.ioi_text(tmpl, s, io, place, obj)
        else:
            raise PromptError(f"corruption must be 'abc' or 'swap', not {corruption!r}.")
        c_ids = encode(tok, text, prepend_bos=prepend_bos)
        k_ids = encode(tok, ctext_i, prepend_bos=prepend_bos)
        io_id = tok.encode(" " + io, add_special_tokens=False)[0]
        s_id = tok.encode(" " + s, add_special_tokens=False)[0]
        s_positions = [j for j, t in enumerate(c_ids) if t == s_id]
        io_positions = [j for j, t in enumerate(c_ids) if t == io_id]
        clean.append(c_ids)
        corrupt.append(k_ids)
        ans.append(io_id)
        wrong.append(s_id)
        ctext.append(text)
        ktext.append(ctext_i)
        kinds.append(kind)
        pos_io.append(io_positions[0] if io_positions else -1)
        pos_s1.append(s_positions[0] if s_positions else -1)
        pos_s2.append(s_positions[1] if len(s_positions) > 1 else -1)
    meta = _tok_meta(tok)
    meta.update(
        template=kinds,
        pos_IO=torch.tensor(pos_io),
        pos_S1=torch.tensor(pos_s1),
        pos_S2=torch.tensor(pos_s2),
        corruption=corruption,
    )
    return PromptSet.from_token_lists(
        clean, ans, corrupted=corrupt, wrong=wrong, clean_text=ctext, corrupted_text=ktext,
        pad_id=_pad_id(tok), name=f"ioi-{templates}-{corruption}", meta=meta, n_ctx=model_n_ctx(model),
    )


def _fill_abc(tmpl: str, a: str, b: str, c: str, place: str, obj: str) -> str:
    """Fill a template with IO=a, first S=b, second S=c (three different names)."""
    first = tmpl.find("[B]")
    second = tmpl.find("[B]", first + 3)
    filled = tmpl[:second] + c + tmpl[second + 3:]
    filled = filled[:first] + b + filled[first + 3:]
    return filled.replace("[A]", a).replace("[PLACE]", place).replace("[OBJECT]", obj)


def induction(
    model,
    n: int = 16,
    *,
    seq_len: int = 50,
    seed: int = 0,
    low: int | None = None,
    high: int | None = None,
    prepend_bos: bool = True,
) -> PromptSet:
    """Repeated random tokens ``[BOS] + r + r[:-1]``; the answer is ``r[-1]``.

    The corrupted prompt replaces the first copy by fresh random tokens, so the answer can no
    longer be copied; its wrong answer is the corrupted first copy's last token. Token ids are
    drawn from [low, high) (default: the tokenizer's ordinary tokens, skipping special ones).
    """
    tok = get_tokenizer(model)
    n_ctx = model_n_ctx(model)
    if n_ctx is not None and 2 * seq_len + 1 > n_ctx:
        raise PromptError(f"2*seq_len+1 = {2 * seq_len + 1} tokens exceed the context ({n_ctx}).")
    special = set(getattr(tok, "all_special_ids", []) or [])
    vocab = int(getattr(getattr(model, "cfg", None), "d_vocab", 0) or len(tok))
    lo = low if low is not None else 0
    hi = high if high is not None else min(vocab, len(tok))
    allowed = torch.tensor([t for t in range(lo, hi) if t not in special])
    if len(allowed) < 2 * seq_len:
        raise PromptError(f"token range [{lo},{hi}) is too small for seq_len={seq_len}.")
    g = torch.Generator().manual_seed(seed)
    r = allowed[torch.randint(len(allowed), (n, seq_len), generator=g)]
    r2 = allowed[torch.randint(len(allowed), (n, seq_len), generator=g)]
    bos = getattr(tok, "bos_token_id", None)
    prefix = [bos] if prepend_bos and bos is not None else []
    clean = [prefix + r[i].tolist() + r[i, :-1].tolist() for i in range(n)]
    corrupt = [prefix + r2[i].tolist() + r[i, :-1].tolist() for i in range(n)]
    meta = _tok_meta(tok)
    meta.update(seq_len=seq_len, bos=bool(prefix))
    return PromptSet.from_token_lists(
        clean, r[:, -1].tolist(), corrupted=corrupt, wrong=r2[:, -1].tolist(),
        clean_text=[tok.decode(c) for c in clean], corrupted_text=[tok.decode(c) for c in corrupt],
        pad_id=_pad_id(tok), name=f"induction-{seq_len}", meta=meta, n_ctx=n_ctx,
    )


def needle(
    model,
    *,
    lengths: Sequence[int] = (128, 256),
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    per_cell: int = 1,
    seed: int = 0,
    prepend_bos: bool = True,
) -> PromptSet:
    """Needle-in-a-haystack prompts over a grid of haystack lengths (tokens) x needle depths.

    The answer token is the first token of the needle's value; the full answer text and its
    token ids are in ``meta["answer_text"]`` / ``meta["answer_tokens"]``, the needle text in
    ``meta["needle"]``. The corrupted prompt is the same haystack with other needle values (same
    token length), so patching can ask which heads carry the value.
    """
    L = _languages()
    tok = get_tokenizer(model)
    rng = random.Random(seed)
    clean, corrupt, ans, wrong, ctext, ktext = ([] for _ in range(6))
    answer_text, answer_tokens, needles, grid = [], [], [], []
    for length in lengths:
        for depth in depths:
            for _ in range(per_cell):
                ex = L.needle_example(rng, length, depth, tok)
                values = ex["values"]
                others = rng.sample([v for v in L.NEEDLE_VALUES if v not in values], len(values))
                alt_needle = L.needle_sentence(others)
                alt_prompt = ex["prompt"].replace(ex["needle"], alt_needle, 1)
                c_ids = encode(tok, ex["prompt"], prepend_bos=prepend_bos)
                k_ids = encode(tok, alt_prompt, prepend_bos=prepend_bos)
                a_ids = tok.encode(ex["answer"], add_special_tokens=False)
                w_ids = tok.encode(" " + " ".join(others), add_special_tokens=False)
                clean.append(c_ids)
                corrupt.append(k_ids)
                ans.append(a_ids[0])
                wrong.append(w_ids[0])
                ctext.append(ex["prompt"])
                ktext.append(alt_prompt)
                answer_text.append(ex["answer"])
                answer_tokens.append(a_ids)
                needles.append(ex["needle"])
                grid.append((int(length), float(ex["depth"])))
    meta = _tok_meta(tok)
    meta.update(answer_text=answer_text, answer_tokens=answer_tokens, needle=needles, grid=grid)
    return PromptSet.from_token_lists(
        clean, ans, corrupted=corrupt, wrong=wrong, clean_text=ctext, corrupted_text=ktext,
        pad_id=_pad_id(tok), name="needle", meta=meta, n_ctx=model_n_ctx(model),
    )
