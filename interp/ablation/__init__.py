"""Ablation of heads, attention layers and MLPs; knockout sweeps; head importance and pruning;
direct versus total effect (the Hydra effect).

Components are named ``"L3H2"`` (query head 2 of layer 3), ``"ATTN3"`` (attention layer 3's whole
output, bias included) and ``"MLP3"``. A head is ablated on its own slice of ``hook_z``, so in GQA
models the key/value head it shares with its group is never touched.

Methods:

* ``zero``: the activation is set to 0.
* ``mean``: the mean over reference prompts (default: the prompts themselves), per position when
  every reference prompt has the same length as the prompts and no padding ("mean-positional"),
  otherwise the mean over every real token.
* ``resample``: the activation from another prompt of the distribution: the reference prompts
  (paired by a seeded permutation) or, without a reference, the prompts' corrupted versions, or
  a seeded derangement of the prompts themselves.

Every intervention is scoped: ``ablated(...)`` adds hooks for the body of a ``with`` block and
removes them on exit, also when the body raises; the functions use it the same way.
"""

from interp.ablation._ablate import AblationResult, ablate, ablated, knockout_sweep
from interp.ablation._components import parse_components
from interp.ablation._hydra import HydraResult, direct_vs_total
from interp.ablation._prune import PruningResult, head_importance, prune_heads

__all__ = [
    "AblationResult",
    "HydraResult",
    "PruningResult",
    "ablate",
    "ablated",
    "direct_vs_total",
    "head_importance",
    "knockout_sweep",
    "parse_components",
    "prune_heads",
]
