"""WSOL methods: one module each, registering its method by name in METHODS. The modules are
found and imported when METHODS is first read (wsol.methods.base), so none is named here."""

from wsol.methods.base import (
    METHODS,
    Method,
    NonFiniteLossError,
    baseline_method,
    build_method,
    method_order,
    method_rank,
)

__all__ = ["METHODS", "Method", "NonFiniteLossError", "baseline_method", "build_method",
           "method_order", "method_rank"]
