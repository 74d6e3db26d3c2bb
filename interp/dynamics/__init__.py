"""Circuits across training: checkpoints of one run, any measurement over them, and the
progress measures of grokking.

* ``Checkpoints``: ``from_dir(path)`` (``step_<N>`` subdirectories in Hugging Face format),
  ``zoo(name)`` (checkpoints shipped with a zoo model), ``hub(model_id, steps)`` (revisions
  such as Pythia's ``step1000`` branches, through ``load_model(..., revision=...)``).
* ``track(checkpoints, fn)``: ``fn(model)`` at each checkpoint, one model in memory at a time,
  stacked on a ``step`` axis (a ``TrackResult``: frames, line plots, save/load).
* ``interp.dynamics.grokking``: Fourier key frequencies, restricted / excluded loss, cosine fit
  and weight norm for the zoo's modular-addition model.
"""

from interp.dynamics._track import Checkpoint, Checkpoints, TrackResult, track

__all__ = ["Checkpoint", "Checkpoints", "TrackResult", "track"]
