"""Prompt-set generators: IOI, repeated random tokens (induction), needle in a haystack."""

from __future__ import annotations

import random
from typing import Literal, Sequence

import torch

from interp.models import describe
from interp.prompts import _language as L
from interp.prompts import _needle, _repeated
from interp.prompts._promptset import (
    PromptError,
    PromptSet,
    _pad_id,
    _tok_meta,
    _unk_id,
    encode,
    get_tokenizer,
    model_n_ctx,
        tokenizer_fingerprint,
)


def single_token_words(tokenizer, words: Sequence[str]) -> list[str]:
    """The words that are exactly one known token (not the unknown token) with a leading space."""
    unk = _unk_id(tokenizer)
    out = []
    for w in words:
        ids = tokenizer.encode(" " + w, add_special_tokens=False)
        if len(ids) == 1 and ids[0] != unk:
            out.append(w)
    return out


def ioi(
    model,
    n: int = 8,
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
    positions = {"IO": pos_io, "S1": pos_s1, "S2": pos_s2, "END": [len(c) - 1 for c in clean]}
    return PromptSet.from_token_lists(
        clean, ans, corrupted=corrupt, wrong=wrong, clean_text=ctext, corrupted_text=ktext,
        pad_id=_pad_id(tok), name=f"ioi-{templates}-{corruption}", meta=meta, n_ctx=model_n_ctx(model),
        positions=positions, tokenizer_fp=tokenizer_fingerprint(tok),
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
    n: int = 8,
    *,
    seq_len: int = 20,
    seed: int = 0,
    low: int | None = None,
    high: int | None = None,
    prepend_bos: bool = True,
) -> PromptSet:
    """Repeated random tokens: the sequence ``[BOS] + r + r`` of :func:`interp.heads.repeated_tokens`
    (same generator, same seed, same tokens) with its last token held out: the prompt is
    ``[BOS] + r + r[:-1]`` and the answer ``r[-1]``.

    The corrupted prompt replaces the first copy by fresh random tokens (the generator's next
    block), so the answer can no longer be copied; its wrong answer is the corrupted first copy's
    last token. Token ids are drawn from [low, high) (default: the tokenizer's ordinary tokens).
    """
    tok = get_tokenizer(model)
    _repeated.check_length(model, seq_len, prepend_bos)
    r, r2 = _repeated.random_blocks(model, n, seq_len, seed=seed, count=2, low=low, high=high)
    prefix = _repeated.bos_prefix(model, prepend_bos)
    clean = [prefix + r[i].tolist() + r[i, :-1].tolist() for i in range(n)]
    corrupt = [prefix + r2[i].tolist() + r[i, :-1].tolist() for i in range(n)]
    meta = _tok_meta(tok)
    meta.update(seq_len=seq_len, bos=bool(prefix))
    b = len(prefix)
    positions = {"A": [b + seq_len - 2] * n, "B": [b + seq_len - 1] * n,
                 "END": [b + 2 * seq_len - 2] * n}
    return PromptSet.from_token_lists(
        clean, r[:, -1].tolist(), corrupted=corrupt, wrong=r2[:, -1].tolist(),
        clean_text=[tok.decode(c) for c in clean], corrupted_text=[tok.decode(c) for c in corrupt],
        pad_id=_pad_id(tok), name=f"induction-{seq_len}", meta=meta, n_ctx=model_n_ctx(model),
        positions=positions, tokenizer_fp=tokenizer_fingerprint(tok),
    )


def needle(
    model,
    n: int = 1,
    *,
    lengths: Sequence[int] = (128,),
    depths: Sequence[int] = (0, 50, 100),
    seed: int = 0,
) -> PromptSet:
    """Needle-in-a-haystack prompts: the retrieval-head trials (``interp.retrieval``) of ``n``
    default needles x context ``lengths`` (tokens, whole prompt) x ``depths`` (integer percents
    0..100, see ``interp.prompts._needle``), in that order; same settings, same token ids.

    The answer token is the first token of the needle's code (" X" of "The secret code is X Y
    Z."); ``meta["answer_text"]``/``meta["answer_tokens"]`` hold the whole code and its ids,
    ``meta["needle"]`` the needle sentence, ``meta["grid"]`` each prompt's (ctx_len, depth %).
    The corrupted prompt is the same haystack with other code words (same token length), whose
    first token is the wrong answer, so patching can ask which heads carry the value.
    """
    tok = get_tokenizer(model)
    try:
        needles, haystacks, lengths, depths = _needle.needle_grid(
            model, _needle.default_needles(n, seed), None, lengths, depths, seed=seed)
    except ValueError as e:
        raise PromptError(str(e)) from None
    rng = random.Random(seed + 7919)
    alts = []
    for nd in needles:
        values = nd.answer.split()
        want = len(tok.encode(" " + nd.needle.strip(), add_special_tokens=False))
        for _ in range(50):
            others = rng.sample([v for v in L.NEEDLE_VALUES if v not in values], len(values))
            alt = _needle.Needle(L.needle_sentence(others), nd.question, " ".join(others))
            if len(tok.encode(" " + alt.needle, add_special_tokens=False)) == want:
                break
        else:
            raise PromptError("no corrupted needle of the same token length was found for "
                              f"{nd.needle!r} under this tokenizer; needle prompts need code words "
                              "that are single tokens.")
        alts.append(alt)
    try:
        trials = _needle.build_trials(model, needles, haystacks, lengths, depths)
        alt_trials = _needle.build_trials(model, alts, haystacks, lengths, depths)
    except ValueError as e:
        raise PromptError(str(e)) from None
    clean, corrupt, ans, wrong, answer_tokens, grid, start, end = ([] for _ in range(8))
    for t, k in zip(trials, alt_trials):
        a_ids = tok.encode(" " + t.answer.strip(), add_special_tokens=False)
        w_ids = tok.encode(" " + k.answer.strip(), add_special_tokens=False)
        if a_ids[0] == _unk_id(tok):
            raise PromptError(f"the needle answer {t.answer!r} starts with a word this tokenizer "
                              f"does not know (tokens {tok.convert_ids_to_tokens(a_ids)}).")
        clean.append(t.ids)
        corrupt.append(k.ids)
        ans.append(a_ids[0])
        wrong.append(w_ids[0])
        answer_tokens.append(a_ids)
        grid.append((t.ctx_len, t.depth))
        start.append(t.span[0])
        end.append(t.span[1] - 1)
    info = describe(model)
    nb = 1 if info.prepends_bos and info.bos_token_id is not None else 0  # as build_trials
    meta = _tok_meta(tok)
    meta.update(answer_text=[" " + t.answer.strip() for t in trials], answer_tokens=answer_tokens,
                needle=[needles[t.needle_index].needle for t in trials], grid=grid,
                depth_unit="percent")
    return PromptSet.from_token_lists(
        clean, ans, corrupted=corrupt, wrong=wrong,
        clean_text=[tok.decode(c[nb:]) for c in clean],
        corrupted_text=[tok.decode(c[nb:]) for c in corrupt],
        pad_id=_pad_id(tok), name="needle", meta=meta, n_ctx=model_n_ctx(model),
        positions={"needle_start": start, "needle_end": end, "END": [len(c) - 1 for c in clean]},
        tokenizer_fp=tokenizer_fingerprint(tok),
    )
