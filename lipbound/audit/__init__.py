"""Audits built on lipbound's certified bounds: monotonicity, robustness, weights and
counterfactual stability."""

from lipbound.audit.counterfactual import CounterfactualStability, counterfactual_stability
from lipbound.audit.monotonicity import FeatureVerdict, MonotonicityReport, monotonicity
from lipbound.audit.robustness import RobustnessRecord, RobustnessReport, robustness
from lipbound.audit.weights import LayerStats, weights

__all__ = [
    "CounterfactualStability", "counterfactual_stability",
    "FeatureVerdict", "LayerStats", "MonotonicityReport", "RobustnessRecord", "RobustnessReport",
    "monotonicity", "robustness", "weights",
]
