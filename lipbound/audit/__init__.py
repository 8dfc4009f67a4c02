"""Audits built on lipbound's certified bounds: monotonicity, robustness, weights and
counterfactual stability."""

from lipbound.audit.monotonicity import FeatureVerdict, MonotonicityReport, monotonicity
from lipbound.audit.weights import LayerStats, weights

__all__ = ["FeatureVerdict", "LayerStats", "MonotonicityReport", "monotonicity", "weights"]
