"""Bound propagation: IBP, CROWN (backward) and alpha-CROWN (optimised) over one graph."""

from lipbound.propagate.driver import METHODS, bound_graph_spec, prepare_state

__all__ = ["METHODS", "bound_graph_spec", "prepare_state"]
