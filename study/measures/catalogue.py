"""Imports every module that registers measures, in catalogue order."""

from . import size, norms, flatness, sharpness, curvature, optimisation  # noqa: F401
