"""Liveness and readiness bodies (:mod:`clr_sweep.contracts`')."""

from clr_sweep.contracts import Health, Readiness

__all__ = ["Health", "Readiness"]
