"""Circuit graphs, edge-level circuit discovery and its evaluation.

A :class:`Circuit` is built from scored edges (edge attribution, path patching) or from a set of
components, drawn as a layered plotly network, exported as JSON or Graphviz DOT, and checked with
:func:`faithfulness` (node level). :func:`discover` scores every edge of the model's
:class:`Graph` (EAP, EAP-IG, exact edge patching) and :func:`acdc` prunes it edge by edge;
:func:`evaluate` and
:func:`faithfulness_curve` run circuits at edge level (faithfulness, MIB's CPR and CMD).
"""

from interp.circuits._acdc import acdc
from interp.circuits._circuit import Circuit, FaithfulnessResult, faithfulness
from interp.circuits._discover import SIGN_CONVENTION, discover, exact_reference
from interp.circuits._evaluate import (
    SIZES,
    CircuitRunner,
    FaithfulnessCurve,
    evaluate,
    faithfulness_curve,
)
from interp.circuits._graph import Graph, n_edges

__all__ = ["SIGN_CONVENTION", "SIZES", "Circuit", "CircuitRunner", "FaithfulnessCurve",
           "FaithfulnessResult", "Graph",
           "acdc", "discover", "evaluate", "exact_reference", "faithfulness", "faithfulness_curve",
           "n_edges"]
