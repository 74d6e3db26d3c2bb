"""Prompt sets: clean/corrupted tokens, answers, answer positions; and their generators."""

from interp.prompts._generators import induction, ioi, needle, single_token_words
from interp.prompts._promptset import PromptError, PromptSet, encode, single_token

__all__ = [
    "PromptError",
    "PromptSet",
    "encode",
    "induction",
    "ioi",
    "needle",
    "single_token",
    "single_token_words",
]
