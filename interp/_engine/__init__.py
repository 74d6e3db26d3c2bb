"""The patching engine (private): restart a forward at any block from a recorded residual, on a
window of positions, many patches stacked along the batch (``restart``), and the scheduler that
turns a sweep of single-cell patches into chunked replays under one memory budget
(``schedule``). Used by activation patching, path patching, knockout sweeps and direct-vs-total.
"""
