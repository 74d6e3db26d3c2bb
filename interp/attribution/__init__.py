"""Attribution patching: first-order estimates of patching in about three passes.

- :func:`attribution_patching` (AtP, node level): ``sum (a_clean - a_corr) * dM/da`` at the
  corrupted run; same axes, baselines and normalisation as activation patching.
- :func:`edge_attribution` (EAP, Syed et al. 2023, edge level): ``(out_u(corr) - out_u(clean)) .
  dM/d in_v`` at the clean run for every sender -> receiver edge. Note the opposite sign
  convention to AtP; both are stored in ``meta``.
"""

from interp.attribution._edges import EAP_CONVENTION, EdgeAttributionResult, edge_attribution
from interp.attribution._nodes import ATP_CONVENTION, attribution_patching

__all__ = ["ATP_CONVENTION", "EAP_CONVENTION", "EdgeAttributionResult", "attribution_patching",
           "edge_attribution"]
