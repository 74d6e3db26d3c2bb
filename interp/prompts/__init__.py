"""Prompt sets: clean/corrupted tokens, answers, answer positions; their generators; and
``PromptSpec``, the hashable description every front end builds its prompts from."""

from interp.prompts._generators import induction, ioi, needle, single_token_words
from interp.prompts._promptset import (
    PromptError,
    PromptSet,
    UnknownTokenWarning,
    encode,
    single_token,
    tokenizer_fingerprint,
)
from interp.prompts._repeated import repeated_tokens
from interp.prompts._spec import PROMPT_KINDS, PromptSpec

__all__ = [
    "PROMPT_KINDS",
    "PromptError",
    "PromptSet",
    "PromptSpec",
    "UnknownTokenWarning",
    "encode",
    "induction",
    "ioi",
    "needle",
    "repeated_tokens",
    "single_token",
    "single_token_words",
    "tokenizer_fingerprint",
]
