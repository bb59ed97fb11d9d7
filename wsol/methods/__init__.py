"""WSOL methods: one module each, registered by name in METHODS."""

from wsol.methods import bgc, cam, minmaxcam, weightmap
from wsol.methods.base import METHODS, Method, NonFiniteLossError, build_method

__all__ = ["METHODS", "Method", "NonFiniteLossError", "bgc", "build_method", "cam", "minmaxcam",
           "weightmap"]
