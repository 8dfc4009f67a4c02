"""Audits built on lipbound's certified bounds: monotonicity, robustness, weights and
counterfactual stability."""

from lipbound.audit.monotonicity import FeatureVerdict, MonotonicityReport, monotonicity

__all__ = ["FeatureVerdict", "MonotonicityReport", "monotonicity"]
