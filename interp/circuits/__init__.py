"""Circuit graphs and their faithfulness.

A :class:`Circuit` is built from scored edges (edge attribution, path patching) or from a set of
components, drawn as a layered plotly network, exported as JSON or Graphviz DOT, and checked with
:func:`faithfulness`.
"""

from interp.circuits._circuit import Circuit, FaithfulnessResult, faithfulness

__all__ = ["Circuit", "FaithfulnessResult", "faithfulness"]
