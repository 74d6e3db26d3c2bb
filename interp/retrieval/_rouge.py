"""ROUGE-1 recall, the acceptance test of the retrieval-head score (Wu et al. 2024).

Tokenisation follows the convention of Google's ``rouge_score`` package: lower-case, every run
of characters outside ``[a-z0-9]`` is a separator. Recall = clipped unigram overlap divided by
the number of reference unigrams. Unlike ``rouge_score(use_stemmer=True)`` (used by Wu et al.),
no Porter stemming is applied (the package is not a dependency); words that differ only by an
inflection therefore do not match here.
"""

from __future__ import annotations

import re
from collections import Counter

_SEP = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words of ``text``."""
    return [w for w in _SEP.split(text.lower()) if w]


def rouge1_recall(reference: str, prediction: str) -> float:
    """Fraction of the reference's unigrams (with multiplicity) found in the prediction."""
    ref = Counter(rouge_tokens(reference))
    if not ref:
        raise ValueError("the reference text has no words; ROUGE-1 recall is undefined")
    pred = Counter(rouge_tokens(prediction))
    overlap = sum(min(n, pred[w]) for w, n in ref.items())
    return overlap / sum(ref.values())
