"""Needle-in-a-haystack trials for the retrieval-head score (Wu et al. 2024, Retrieval_Head repo).

The builder is the one the ``needle`` prompt sets use (``interp.prompts._needle``: depths are
integer percents 0..100); this module names the pieces the retrieval scores use.
"""

from interp.prompts._needle import (
    DEFAULT_DEPTHS,
    Needle,
    Trial,
    build_trials,
    check_depths,
    default_haystack,
    default_needles,
    find_span,
    needle_grid,
    needle_trials,
)

__all__ = ["DEFAULT_DEPTHS", "Needle", "Trial", "build_trials", "check_depths",
           "default_haystack", "default_needles", "find_span", "needle_grid", "needle_trials"]
