"""Exact activation patching and path patching.

- :func:`activation_patching`: patch one activation at a time (every layer, position and/or
  head) from a source run into a base run and read the metric.
- :func:`path_patching`: patch a sender head's output along its path into chosen receivers only.

Both return a :class:`PatchingResult` (normalised scores, paired per-example scores, bootstrap
CIs, raw metric values). See docs/patching.md for conventions and speed.
"""

from interp.patching._activation import Direction, Target, activation_patching
from interp.patching._path import path_patching
from interp.patching._result import PatchingResult

__all__ = ["Direction", "PatchingResult", "Target", "activation_patching", "path_patching"]
