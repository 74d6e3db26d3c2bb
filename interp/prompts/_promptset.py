"""PromptSet: clean / corrupted tokens, answers and the positions where they are read."""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor


class PromptError(ValueError):
    """Bad prompts: the message says what is wrong and how to fix it."""


class UnknownTokenWarning(UserWarning):
    """A prompt contains words the tokenizer does not know (they became its unknown token)."""


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A short hash of the tokenizer's sorted (token, id) pairs (cached per tokenizer object).

    Two tokenizers with the same vocabulary size but a different mapping get different
    fingerprints, so prompts built for one are refused by a model that uses the other.
    """
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    try:
        return _FINGERPRINTS[tokenizer]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256()
    for tok, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0])):
        h.update(f"{i}\t{tok}\n".encode("utf-8", "surrogatepass"))
    fp = h.hexdigest()[:16]
    try:
        _FINGERPRINTS[tokenizer] = fp
    except TypeError:
        pass
    return fp


def _unk_id(tokenizer) -> int | None:
    unk = getattr(tokenizer, "unk_token_id", None)
    return None if unk is None else int(unk)


def unknown_words(tokenizer, text: str) -> list[str]:
    """The whitespace-separated words of ``text`` that contain the tokenizer's unknown token."""
    unk = _unk_id(tokenizer)
    if unk is None:
        return []
    if unk not in tokenizer.encode(text, add_special_tokens=False):
        return []
    out = []
    for j, word in enumerate(text.split()):
        ids = tokenizer.encode(word if j == 0 and not text[:1].isspace() else " " + word,
                               add_special_tokens=False)
        if unk in ids and word not in out:
            out.append(word)
    return out or ["(unknown token)"]


def get_tokenizer(model_or_tokenizer):
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if tok is None or not hasattr(tok, "encode"):
        raise PromptError(
            "this model has no tokenizer; load it from a directory that has tokenizer files, "
            "or pass token tensors directly."
        )
    return tok


def model_n_ctx(model_or_tokenizer) -> int | None:
    cfg = getattr(model_or_tokenizer, "cfg", None)
    return int(cfg.n_ctx) if cfg is not None and getattr(cfg, "n_ctx", None) else None


def encode(tokenizer, text: str, *, prepend_bos: bool = True, warn: bool = True) -> list[int]:
    """Token ids of ``text`` (no special tokens), with the tokenizer's BOS in front if asked.

    Words the tokenizer does not know become its unknown token; that is warned about
    (:class:`UnknownTokenWarning`, naming the words) unless ``warn=False``.
    """
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    unk = _unk_id(tokenizer)
    if warn and unk is not None and unk in ids:
        words = unknown_words(tokenizer, text)
        warnings.warn(f"the prompt {text!r} contains words the tokenizer does not know: {words} "
                      f"(each became {tokenizer.convert_ids_to_tokens(unk)!r}); results on it "
                      "treat them as one unknown token.", UnknownTokenWarning, stacklevel=2)
    bos = getattr(tokenizer, "bos_token_id", None)
    if prepend_bos and bos is not None:
        ids = [bos] + ids
    return ids


def single_token(tokenizer, text: str, *, what: str = "answer") -> int:
    """The one token id of ``text``; a clear error when it is several tokens or none."""
    if text == "":
        raise PromptError(f"empty {what}: give the token text, usually with a leading space (' Mary').")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise PromptError(
            f"the {what} {text!r} is {len(ids)} tokens {pieces}, but the metric reads one token's "
            "logit. Use a single-token answer (often the word with a leading space), or read the "
            "first token only by passing its text."
        )
    unk = _unk_id(tokenizer)
    unk_text = getattr(tokenizer, "unk_token", None)
    if unk is not None and int(ids[0]) == unk and text != unk_text:
        raise PromptError(
            f"the {what} {text!r} is not in the tokenizer's vocabulary: it tokenises to "
            f"[{unk_text!r}] (the unknown token), so its logit says nothing about {text!r}. "
            "Use a word the tokenizer knows (often with a leading space)."
        )
    return int(ids[0])


@dataclass
class PromptSet:
    """A batch of prompts for a method.

    ``clean_tokens``/``corrupted_tokens`` are right-padded to one length; ``answer_pos[i]`` is the
    position whose logits predict example i's answer (its last real token), so prompts of
    different lengths are read where they end. Clean and corrupted prompts of one example always
    have the same token length (checked), so positions align for patching.

    ``positions`` names positions the generator knows, per example (role -> ``[batch]`` tensor,
    -1 where an example lacks the role): IOI ``IO``, ``S1``, ``S2``, ``END``; induction ``A``
    (first-copy occurrence of the last token), ``B`` (the answer's first-copy position), ``END``;
    needle ``needle_start``/``needle_end`` (first and last token of the answer span), ``END``.
    ``tokenizer_fp`` is the fingerprint of the tokenizer the prompts were built with
    (:func:`tokenizer_fingerprint`); ``check(model)`` refuses a model with another tokenizer.
    Prompt sets made from raw token ids have none and skip that check.
    """

    clean_tokens: Int[Tensor, "batch pos"]
    answer_ids: Int[Tensor, "batch"]
    answer_pos: Int[Tensor, "batch"]
    corrupted_tokens: Int[Tensor, "batch pos"] | None = None
    wrong_ids: Int[Tensor, "batch"] | None = None
    clean_text: list[str] = field(default_factory=list)
    corrupted_text: list[str] | None = None
    name: str = "prompts"
    pad_id: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    positions: dict[str, Tensor] = field(default_factory=dict)
    tokenizer_fp: str | None = None

    def __post_init__(self) -> None:
        if self.clean_tokens.ndim != 2 or self.clean_tokens.shape[0] == 0:
            raise PromptError("clean_tokens must be [batch, pos] with at least one prompt.")
        b, p = self.clean_tokens.shape
        for label, t in (("answer_ids", self.answer_ids), ("answer_pos", self.answer_pos)):
            if t.shape != (b,):
                raise PromptError(f"{label} must have shape ({b},), got {tuple(t.shape)}.")
        if self.corrupted_tokens is not None and self.corrupted_tokens.shape != (b, p):
            raise PromptError(
                f"corrupted_tokens {tuple(self.corrupted_tokens.shape)} must match clean_tokens "
                f"{(b, p)}."
            )
        if self.wrong_ids is not None and self.wrong_ids.shape != (b,):
            raise PromptError(f"wrong_ids must have shape ({b},).")
        if int(self.answer_pos.min()) < 0 or int(self.answer_pos.max()) >= p:
            raise PromptError("answer_pos out of range of the token positions.")
        self.positions = {str(k): torch.as_tensor(v, dtype=torch.long)
                          for k, v in self.positions.items()}
        for role, t in self.positions.items():
            if t.shape != (b,):
                raise PromptError(f"positions[{role!r}] must have shape ({b},), got {tuple(t.shape)}.")
            if int(t.min()) < -1 or int(t.max()) >= p:
                raise PromptError(f"positions[{role!r}] out of range (use -1 for 'absent').")

    # --- basic protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.clean_tokens.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.clean_tokens.shape[1])

    @property
    def has_corrupted(self) -> bool:
        return self.corrupted_tokens is not None

    @property
    def aligned(self) -> bool:
        """True when every prompt ends at the same position (no padding)."""
        return bool((self.answer_pos == self.answer_pos[0]).all())

    @property
    def same_layout(self) -> bool:
        """True when position ``p`` plays the same role in every example: all prompts end at the
        same position and every named position (``positions``) has one index for all of them.
        Per-position results are indexed by position only then; otherwise by role."""
        if not self.aligned:
            return False
        return all(bool((t == t[0]).all()) for t in self.positions.values())

    @property
    def padded(self) -> bool:
        """True when some prompt is shorter than the batch and filled with ``pad_id`` after its
        answer position (prompts of different lengths, right-padded)."""
        n = self.n_pos
        for b in range(len(self)):
            a = int(self.answer_pos[b])
            if a < n - 1 and bool((self.clean_tokens[b, a + 1:] == self.pad_id).all()):
                return True
        return False

    def require_corrupted(self) -> Tensor:
        if self.corrupted_tokens is None:
            raise PromptError(
                f"prompt set {self.name!r} has no corrupted prompts; build it with a corruption "
                "(e.g. prompts.ioi(model, corruption='abc')) or PromptSet.from_pairs(...)."
            )
        return self.corrupted_tokens

    def require_wrong(self) -> Tensor:
        if self.wrong_ids is None:
            raise PromptError(
                f"prompt set {self.name!r} has no wrong-answer tokens, which the logit-difference "
                "metric needs; pass wrong answers or use metric='prob'."
            )
        return self.wrong_ids

    def subset(self, idx: Sequence[int] | slice | Tensor) -> PromptSet:
        if isinstance(idx, slice):
            idx = list(range(len(self)))[idx]
        index = torch.as_tensor(idx, dtype=torch.long)
        pick = lambda xs: xs if not xs else [xs[int(i)] for i in index]  # noqa: E731
        return PromptSet(
            clean_tokens=self.clean_tokens[index],
            answer_ids=self.answer_ids[index],
            answer_pos=self.answer_pos[index],
            corrupted_tokens=None if self.corrupted_tokens is None else self.corrupted_tokens[index],
            wrong_ids=None if self.wrong_ids is None else self.wrong_ids[index],
            clean_text=pick(self.clean_text) or [],
            corrupted_text=pick(self.corrupted_text),
            name=self.name,
            pad_id=self.pad_id,
            meta={k: (v[index] if isinstance(v, Tensor) and v.shape[:1] == (len(self),) else v)
                  for k, v in self.meta.items()},
            positions={k: v[index] for k, v in self.positions.items()},
            tokenizer_fp=self.tokenizer_fp,
        )

    def to(self, device: str | torch.device) -> PromptSet:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PromptSet(
            clean_tokens=move(self.clean_tokens),
            answer_ids=move(self.answer_ids),
            answer_pos=move(self.answer_pos),
            corrupted_tokens=move(self.corrupted_tokens),
            wrong_ids=move(self.wrong_ids),
            clean_text=self.clean_text,
            corrupted_text=self.corrupted_text,
            name=self.name,
            pad_id=self.pad_id,
            meta=self.meta,
            positions={k: v.to(device) for k, v in self.positions.items()},
            tokenizer_fp=self.tokenizer_fp,
        )

    def str_tokens(self, model_or_tokenizer, i: int = 0, *, corrupted: bool = False) -> list[str]:
        tok = get_tokenizer(model_or_tokenizer)
        src = self.require_corrupted() if corrupted else self.clean_tokens
        n = int(self.answer_pos[i]) + 1
        return [tok.decode([int(t)]) for t in src[i, :n]]

    def position_labels(self, model_or_tokenizer=None) -> list[str]:
        """One honest label per token position, for per-position results.

        ``"p:tok"`` when every example has the same real token at ``p``; else ``"p:<ROLE>"``
        when every example has the same named position there (IOI ``<IO>``, ``<S2>``, ``<END>``
        ...), else ``"p:<mixed>"``. When examples end at different positions (right padding), a
        position where only some examples end says ``[END k/n]`` and one where some are padding
        says ``[pad k/n]``.
        """
        tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
        tok = tok if tok is not None and hasattr(tok, "decode") else None
        n = len(self)
        toks = self.clean_tokens.cpu()
        ans = self.answer_pos.cpu()
        roles = {r: t.cpu() for r, t in self.positions.items()}
        out = []
        for p in range(self.n_pos):
            real = ans >= p
            col = toks[:, p]
            if bool(real.all()) and bool((col == col[0]).all()):
                base = tok.decode([int(col[0])]) if tok is not None else ""
            else:
                shared = [r for r, t in roles.items() if bool((t == p).all())]
                base = f"<{'/'.join(shared)}>" if shared else "<mixed>"
            ends, pads = int((ans == p).sum()), int((~real).sum())
            if 0 < ends < n:
                base += f" [END {ends}/{n}]"
            if pads:
                base += f" [pad {pads}/{n}]"
            out.append(f"{p}:{base}" if base else str(p))
        return out

    def check(self, model) -> PromptSet:
        """Fail loudly when these prompts cannot be run on ``model``."""
        n_ctx = model_n_ctx(model)
        if n_ctx is not None and self.n_pos > n_ctx:
            raise PromptError(
                f"prompts are {self.n_pos} tokens but the model's context is {n_ctx}; shorten them."
            )
        d_vocab = int(model.cfg.d_vocab) if getattr(model, "cfg", None) is not None else None
        if d_vocab is not None:
            top = int(self.clean_tokens.max())
            if self.corrupted_tokens is not None:
                top = max(top, int(self.corrupted_tokens.max()))
            top = max(top, int(self.answer_ids.max()))
            if top >= d_vocab:
                raise PromptError(
                    f"token id {top} is outside the model's vocabulary ({d_vocab}): these prompts "
                    "were made with a tokenizer that does not match the model. Build them with "
                    "the model itself (pass the model, not another tokenizer)."
                )
        model_tok = getattr(model, "tokenizer", None)
        if self.tokenizer_fp is not None and model_tok is not None:
            fp = tokenizer_fingerprint(model_tok)
            if fp is not None and fp != self.tokenizer_fp:
                name = self.meta.get("tokenizer") or "another tokenizer"
                raise PromptError(
                    f"prompt set {self.name!r} was built with a different tokenizer ({name!r}, "
                    f"vocabulary fingerprint {self.tokenizer_fp}) than this model's "
                    f"({getattr(model_tok, 'name_or_path', '?')!r}, fingerprint {fp}): the same "
                    "ids mean other tokens here. Rebuild the prompts with this model."
                )
        return self

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_token_lists(
        cls,
        clean: list[list[int]],
        answers: list[int],
        *,
        corrupted: list[list[int]] | None = None,
        wrong: list[int] | None = None,
        clean_text: list[str] | None = None,
        corrupted_text: list[str] | None = None,
        pad_id: int = 0,
        name: str = "prompts",
        meta: dict[str, Any] | None = None,
        n_ctx: int | None = None,
        positions: dict[str, Sequence[int]] | None = None,
        tokenizer_fp: str | None = None,
    ) -> PromptSet:
        if not clean:
            raise PromptError("no prompts given.")
        if len(answers) != len(clean):
            raise PromptError(f"{len(clean)} prompts but {len(answers)} answers.")
        for i, ids in enumerate(clean):
            if len(ids) == 0:
                raise PromptError(f"prompt {i} is empty.")
        if corrupted is not None:
            if len(corrupted) != len(clean):
                raise PromptError(f"{len(clean)} clean prompts but {len(corrupted)} corrupted ones.")
            for i, (c, k) in enumerate(zip(clean, corrupted)):
                if len(c) != len(k):
                    ct = (clean_text or [""] * len(clean))[i]
                    kt = (corrupted_text or [""] * len(clean))[i]
                    raise PromptError(
                        f"prompt {i}: clean and corrupted token lengths differ ({len(c)} vs "
                        f"{len(k)}): {ct!r} vs {kt!r}. Patching needs aligned positions: use "
                        "corruptions that swap single tokens for single tokens."
                    )
        if wrong is not None and len(wrong) != len(clean):
            raise PromptError(f"{len(clean)} prompts but {len(wrong)} wrong answers.")
        longest = max(len(c) for c in clean)
        if n_ctx is not None and longest > n_ctx:
            raise PromptError(
                f"the longest prompt is {longest} tokens but the model's context is {n_ctx} "
                "tokens; shorten the prompts."
            )

        def pad(rows: list[list[int]]) -> Tensor:
            out = torch.full((len(rows), longest), pad_id, dtype=torch.long)
            for i, r in enumerate(rows):
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            return out

        return cls(
            clean_tokens=pad(clean),
            answer_ids=torch.tensor(answers, dtype=torch.long),
            answer_pos=torch.tensor([len(c) - 1 for c in clean], dtype=torch.long),
            corrupted_tokens=None if corrupted is None else pad(corrupted),
            wrong_ids=None if wrong is None else torch.tensor(wrong, dtype=torch.long),
            clean_text=list(clean_text or []),
            corrupted_text=None if corrupted_text is None else list(corrupted_text),
            name=name,
            pad_id=pad_id,
            meta=dict(meta or {}),
            positions={k: torch.tensor(list(v), dtype=torch.long)
                       for k, v in (positions or {}).items()},
            tokenizer_fp=tokenizer_fp,
        )

    @classmethod
    def from_pairs(
        cls,
        model,
        clean: Sequence[str],
        answers: Sequence[str],
        *,
        corrupted: Sequence[str] | None = None,
        wrong: Sequence[str] | None = None,
        prepend_bos: bool = True,
        name: str = "custom",
    ) -> PromptSet:
        """Prompts typed by a user: texts, single-token answers (e.g. ' Mary'), optional pairs.

        An answer or wrong answer that is not exactly one known token is refused (naming it and
        its tokens); prompt words the tokenizer does not know are warned about
        (:class:`UnknownTokenWarning`) and listed in ``meta["unknown_words"]``.
        """
        tok = get_tokenizer(model)
        clean = [clean] if isinstance(clean, str) else list(clean)
        answers = [answers] if isinstance(answers, str) else list(answers)
        if isinstance(corrupted, str):
            corrupted = [corrupted]
        if isinstance(wrong, str):
            wrong = [wrong]
        if len(answers) == 1 and len(clean) > 1:
            answers = answers * len(clean)
        if wrong is not None and len(wrong) == 1 and len(clean) > 1:
            wrong = list(wrong) * len(clean)
        for i, text in enumerate(clean):
            if not text.strip():
                raise PromptError(f"prompt {i} is empty; type some text.")
        if corrupted is not None:
            for i, text in enumerate(corrupted):
                if not text.strip():
                    raise PromptError(f"corrupted prompt {i} is empty.")
        answer_ids = [single_token(tok, a) for a in answers]
        wrong_ids = None if wrong is None else [single_token(tok, w, what="wrong answer") for w in wrong]
        unknown = [w for t in [*clean, *(corrupted or [])] for w in unknown_words(tok, t)]
        unknown = list(dict.fromkeys(unknown))
        if unknown:
            warnings.warn(f"the prompts contain words the tokenizer does not know: {unknown} "
                          "(each became the unknown token); results treat them as one token.",
                          UnknownTokenWarning, stacklevel=2)
        meta = _tok_meta(tok)
        if unknown:
            meta["unknown_words"] = unknown
        return cls.from_token_lists(
            [encode(tok, t, prepend_bos=prepend_bos, warn=False) for t in clean],
            answer_ids,
            corrupted=None if corrupted is None else [encode(tok, t, prepend_bos=prepend_bos, warn=False) for t in corrupted],
            wrong=wrong_ids,
            clean_text=clean,
            corrupted_text=None if corrupted is None else list(corrupted),
            pad_id=_pad_id(tok),
            name=name,
            meta=meta,
            n_ctx=model_n_ctx(model),
            tokenizer_fp=tokenizer_fingerprint(tok),
        )

    # --- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"clean_tokens": self.clean_tokens, "answer_ids": self.answer_ids,
                   "answer_pos": self.answer_pos}
        if self.corrupted_tokens is not None:
            tensors["corrupted_tokens"] = self.corrupted_tokens
        if self.wrong_ids is not None:
            tensors["wrong_ids"] = self.wrong_ids
        tensor_meta = {k: v for k, v in self.meta.items() if isinstance(v, Tensor)}
        tensors.update({f"meta.{k}": v.contiguous() for k, v in tensor_meta.items()})
        tensors.update({f"positions.{k}": v.contiguous() for k, v in self.positions.items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "tensors.safetensors"))
        info = {"name": self.name, "pad_id": self.pad_id, "clean_text": self.clean_text,
                "tokenizer_fp": self.tokenizer_fp,
                "corrupted_text": self.corrupted_text,
                "meta": {k: v for k, v in self.meta.items() if k not in tensor_meta}}
        (path / "promptset.json").write_text(json.dumps(info, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> PromptSet:
        from safetensors.torch import load_file

        path = Path(path)
        t = load_file(str(path / "tensors.safetensors"))
        info = json.loads((path / "promptset.json").read_text())
        meta = dict(info["meta"])
        meta.update({k[5:]: v for k, v in t.items() if k.startswith("meta.")})
        return cls(
            clean_tokens=t["clean_tokens"], answer_ids=t["answer_ids"], answer_pos=t["answer_pos"],
            corrupted_tokens=t.get("corrupted_tokens"), wrong_ids=t.get("wrong_ids"),
            clean_text=info["clean_text"], corrupted_text=info["corrupted_text"],
            name=info["name"], pad_id=info["pad_id"], meta=meta,
            positions={k[10:]: v for k, v in t.items() if k.startswith("positions.")},
            tokenizer_fp=info.get("tokenizer_fp"),
        )


def _pad_id(tok) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(tok, attr, None)
        if v is not None:
            return int(v)
    return 0


def _tok_meta(tok) -> dict[str, Any]:
    return {"tokenizer": getattr(tok, "name_or_path", None), "vocab_size": len(tok)}
