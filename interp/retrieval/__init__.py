"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality"): the copy-paste score, the masking experiment and DeCoRe decoding.

Retrieval score (as in the paper's released detection code): on a grid of
needle-in-a-haystack trials (context lengths x depths), decode greedily; at each step t every head
whose argmax attention (last query row, over all keys including generated ones) lands inside the
needle span on the very token being emitted makes one copy-paste event. Per-trial score = events /
span length. A trial counts if ROUGE-1 recall of the answer in the response is > 50%; the head's
score is the mean over counted trials; retrieval head = score > 0.1.

Two implementations, identical results (tested):

* ``"reference"``: per trial, one full forward per decode step, reading the last query row of
  every ``hook_pattern``.
* ``"fast"``: greedy decoding with a KV cache, batched over the trials of one prompt length; then
  ONE teacher-forced forward over prompt + generated tokens (batched over trials, right-padded,
  which a causal model never sees), keeping only the argmax of the rows of the decode steps.
  It checks that the teacher-forced argmax of the logits reproduces every generated token; a trial
  where it does not (a float near-tie between cached and uncached arithmetic) is redone with the
  reference (counted in ``meta["fast_fallbacks"]``).

Masking (``masking_experiment``) and DeCoRe (``decore_generate``, Gema et al. 2024) use
decode-step head masks (query-row or full masking of chosen heads).
"""

from interp.retrieval._rouge import rouge1_recall
from interp.retrieval._scores import (
    RETRIEVAL_THRESHOLD,
    DecodeOutput,
    MaskingResult,
    decore_generate,
    masking_experiment,
    retrieval_scores,
    trial_fractions,
    trial_scores,
)
from interp.retrieval._trials import Needle

__all__ = [
    "RETRIEVAL_THRESHOLD",
    "DecodeOutput",
    "MaskingResult",
    "Needle",
    "decore_generate",
    "masking_experiment",
    "retrieval_scores",
    "rouge1_recall",
    "trial_fractions",
    "trial_scores",
]
