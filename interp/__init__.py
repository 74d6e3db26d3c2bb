"""interp: a mechanistic-interpretability workbench on transformer-lens 4.x."""

__version__ = "0.1.0"
